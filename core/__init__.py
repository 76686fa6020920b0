"""The mechanisms every layer shares, each with one owner: the errors a user can fix (``errors``) and
stopping on SIGINT/SIGTERM (``stopping``). ``core`` imports nothing else of genlab."""
