"""The application layer: plan and apply profiles, as the CLI, the daemon and later the web use them.

It takes the archive's lock, reads the directories, checks saved plans, and hands
the plan to the executor, which archives (and deletes) per mailbox with bounded
concurrency, in the write order the store guarantees. Results are plain values
that the caller renders; the daemon runs the same service on a schedule.
"""
