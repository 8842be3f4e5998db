"""fusionrec adapter package: the closed-loop demo harness.

It starts real services, sets their environment and drives them over HTTP with simulated
users (`fusionrec simulate`, `fusionrec loop`, `make loop`); every decision it shows (monitor,
merge, retrain, gate, promotion) is the library's.
"""
