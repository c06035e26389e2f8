"""Real peers on 127.0.0.1 for tests: Entente itself as a process, and the third-party servers it talks to.

Each helper starts a real program (console script or binary) on a free loopback port, waits until
it answers, and stops it at teardown. A peer that cannot start fails the test with its log; no
peer test is ever skipped.
"""
