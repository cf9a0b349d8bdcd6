"""The engine: intake, the work queue and workers, one pass per domain, the ledger, schedule().

What happens is chosen by `reconcilers.decide.decide()` and when by `engine.schedule.schedule()`;
everything else here carries those choices out and keeps the books.
"""
