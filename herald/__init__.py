"""Herald's entry package: the ``herald`` command, the migration runner and the one list of
services. It imports ``shared`` and ``services``; neither imports it, so the dependency points one
way: ``herald`` → ``services`` → ``shared``."""
