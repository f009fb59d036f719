"""The command line: parse the arguments, call one function of the layers below, render, exit.

One module per command group; ``render`` turns plans, results, statistics and run
protocols into text. Nothing here decides what is archived or touches a server:
that is :mod:`imapsync_decl.run` and below. Only ``__main__`` and the console script
import this package.
"""
