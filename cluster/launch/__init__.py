"""The launcher: the ``cluster`` command and everything that starts roles.

This is the one layer that imports the roles' packages (``gateway/``, ``workers/``, ``dummy/``)
and the core (``cluster/``); nothing in the core or in a role imports it back. Its modules:
:mod:`~cluster.launch.cli` (the command line), :mod:`~cluster.launch.roles` (the role table),
:mod:`~cluster.launch.supervisor` (``cluster up``), :mod:`~cluster.launch.demo`
(``cluster demo``), :mod:`~cluster.launch.screens` (the console screens of ``cluster up``) and
:mod:`~cluster.launch.admin` (``cluster db init``, ``cluster accounts create``).
"""
