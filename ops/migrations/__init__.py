"""node-pg-migrate's view of the managed database, in plain Python (no Django),
one module per concern:

* ``ordering``: the tool's rules for which files count, their order and the
  order check (pure functions of names);
* ``sources``: the files on this machine, and the ``MigrationFiles`` listing a
  platform driver returns (drivers list, read and run ``up`` where the files are);
* ``applied``: the rows of the migrations table;
* ``report``: files and rows merged, with statuses and a prediction of ``up``;
* ``runner``: running the real ``node-pg-migrate up`` on this machine.

Import the module you need (``from ops.migrations import report``); this
package re-exports nothing."""
