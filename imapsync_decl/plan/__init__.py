"""What is to be done: facts read from the servers, compared with the index, give a Plan.

``folders``, ``filters`` and ``deletion`` are the profile's rules; ``reconcile``
compares the facts with the index and is pure; ``model`` is the Plan, a versioned
value that ``plan --out`` saves; ``planner`` gathers the facts through read-only
sessions and calls reconcile; ``saved`` refuses a saved plan that no longer fits.
"""
