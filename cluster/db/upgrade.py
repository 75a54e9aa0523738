"""Bringing an existing schema up to the one in ``sql/``: what ``cluster db init`` does to a DB that
already has tables.

The schema files stay the one description of the current schema: :func:`target_tables` reads the
tables, columns and (MySQL) indexes out of their CREATE TABLE statements. An init first takes an
inventory of what the DB holds (:class:`Inventory`), then plans, without touching anything, the
changes that make every existing table hold at least the target's columns with compatible types
(:func:`plan_mysql`, :func:`plan_sqlite`); a column that cannot be brought there safely refuses the
whole init with one line (:class:`SchemaRefused`) before anything is changed. The plan runs, then
the schema file (which creates missing tables and indexes and recreates the view ``v_account``),
then ``accountdb.schema_version`` records :data:`~cluster.db.base.SCHEMA_VERSION`. A DB recording a
newer version than this code knows is refused.

The plan depends only on what is found, not on the recorded version: a DB from any earlier schema
(the original's DDL, this project's first one, a half-done upgrade) converges, and an init of a
current DB changes nothing. Rules, per column of the target:

* missing: added when it is NULL-able or has a DEFAULT, else refused (existing rows would need a
  value nobody knows);
* a string column shorter than the target, or an integer column narrower: widened (MySQL MODIFY;
  SQLite does not enforce lengths, so nothing is done there unless the table is rebuilt anyway);
* NOT NULL where the target allows NULL: made NULL-able (MySQL MODIFY keeping the type; SQLite
  cannot alter a column, so the table is rebuilt: created anew, rows copied, old one dropped);
* the session key held as text (the original's ``CHAR(64)``): MySQL converts the column to
  ``BINARY(64)``, which keeps each key's bytes (a 64-character ASCII key is the same 64 bytes; a
  shorter one is padded with NULs, which no 64-byte key a client sends could have matched as text
  either), and refuses when a stored key has more than 64 bytes; SQLite rebuilds the table with
  ``CAST(sessionkey AS BLOB)``, the UTF-8 bytes the code already read such text as;
* SQLite: an auto-numbered key declared otherwise than ``INTEGER PRIMARY KEY`` (so it is not the
  row id, and an INSERT without it would fail): the table is rebuilt;
* any other difference of kind (text where the target holds an integer, binary of another length,
  ...): refused, naming the column, its type and the target's.

Columns and indexes beyond the target's are kept (a rebuilt SQLite table keeps extra columns as
NULL-able columns of their declared type, but not extra indexes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cluster.db.base import SCHEMA_VERSION, DatabaseError, SchemaReport
from cluster.db.schema import ACCOUNTDB

VERSION_TABLE = "schema_version"
VIEW = "v_account"

_INT_RANK = {"tinyint": 1, "smallint": 2, "mediumint": 3, "int": 4, "integer": 4, "bigint": 5}
_STRING = {"char", "varchar", "text", "tinytext", "mediumtext", "longtext"}
_BINARY = {"binary", "varbinary"}
_CREATE_TABLE = re.compile(
    r"CREATE TABLE IF NOT EXISTS `?(\w+)`?\.`?(\w+)`?\s*\((.*)\)(?:\s*ENGINE\s*=\s*\w+)?\s*$",
    re.DOTALL | re.IGNORECASE,
)
_INDEX_LINE = re.compile(r"INDEX\s+`?(\w+)`?\s*\((.*)\)", re.IGNORECASE)
_CONSTRAINT = re.compile(
    r"\b(?:NOT\s+NULL|NULL|DEFAULT|PRIMARY|UNIQUE|CHECK|REFERENCES|COLLATE|AUTO_INCREMENT)\b",
    re.IGNORECASE,
)
_TYPE = re.compile(r"\s*(\w+)\s*(?:\(\s*(\d+)\s*\))?")


class SchemaRefused(DatabaseError):
    """The DB's schema cannot be brought to the current one safely (or is newer): nothing was
    changed. The message is one line."""


@dataclass(frozen=True)
class Column:
    """A column, of the target (``declared`` is its definition after the name) or found in the DB
    (``declared`` is its type as the DB shows it, e.g. ``char(64)``)."""

    name: str
    declared: str
    type: str  # base type, lower case: "varchar", "bigint"
    length: int | None
    nullable: bool
    has_default: bool = False
    primary: bool = False  # SQLite: part of the primary key


@dataclass
class Table:
    """A target table: its database (``accountdb`` / ``status_server``), columns in order, its
    CREATE statement, and (MySQL) its secondary indexes: name -> indexed column names."""

    database: str
    name: str
    create: str
    columns: list[Column] = field(default_factory=list)
    indexes: dict[str, list[str]] = field(default_factory=dict)
    index_clauses: dict[str, str] = field(default_factory=dict)


@dataclass
class Inventory:
    """What a DB holds: per (database, table) its columns by lower-case name, the views, the
    index names per table (lower case), and the recorded schema version (None: no record)."""

    tables: dict[tuple[str, str], dict[str, Column]] = field(default_factory=dict)
    views: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    indexes: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    version: int | None = None


@dataclass
class Plan:
    """Statements to run before the schema file, the checks of data that must pass first ((SQL
    returning a count, refusal text when it is not 0, the count in place of ``{COUNT}``)), and
    the changes in words."""

    statements: list[str] = field(default_factory=list)
    checks: list[tuple[str, str]] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)


def parse_column(name: str, declared: str, *, nullable: bool | None = None) -> Column:
    """A Column from a definition such as ``VARCHAR(255) NULL`` (`nullable` overrides what the
    text says, for columns read from the DB)."""
    match = _TYPE.match(declared)
    base = match.group(1).lower() if match and match.group(1) else ""
    length = int(match.group(2)) if match and match.group(2) else None
    upper = declared.upper()
    return Column(
        name=name,
        declared=declared.strip(),
        type=base,
        length=length,
        nullable=("NOT NULL" not in upper) if nullable is None else nullable,
        has_default="DEFAULT" in upper,
        primary="PRIMARY KEY" in upper,
    )


def target_tables(statements: list[str], databases: dict[str, str]) -> list[Table]:
    """The tables that the schema file's CREATE TABLE statements describe. `databases` maps the
    names used in the file (prefixed on MySQL) to ``accountdb`` / ``status_server``."""
    tables = []
    for statement in statements:
        match = _CREATE_TABLE.match(statement.strip())
        if not match:
            continue
        database, name, body = match.groups()
        table = Table(database=databases.get(database, database), name=name, create=statement)
        for raw in body.splitlines():
            line = raw.strip().rstrip(",").strip()
            if not line or line.upper().startswith(("PRIMARY KEY", "UNIQUE", "KEY ")):
                continue
            index = _INDEX_LINE.match(line)
            if index:
                columns = [part.split()[0].strip("`") for part in index.group(2).split(",")]
                table.indexes[index.group(1)] = columns
                table.index_clauses[index.group(1)] = f"ADD {line}"
                continue
            column_name, _, declared = line.partition(" ")
            table.columns.append(parse_column(column_name.strip("`"), declared))
        tables.append(table)
    return tables


def check_version(inventory: Inventory, where: str) -> None:
    """Refuse a DB that records a newer schema than this code's."""
    if inventory.version is not None and inventory.version > SCHEMA_VERSION:
        raise SchemaRefused(
            f"{where}: the schema is version {inventory.version}, newer than this code's version"
            f" {SCHEMA_VERSION}: run a newer cluster (nothing was changed)"
        )


def _refuse(where: str, qualified: str, found: str, wanted: str) -> SchemaRefused:
    return SchemaRefused(
        f"{where}: cannot upgrade the schema: {qualified} is {found}, the schema needs {wanted}"
        " and it cannot be converted safely (nothing was changed)"
    )


def _describe(found: Column, target: Column, family: str) -> str | None:
    """ "widened" / "made nullable" / None, for a column of the same kind as the target's."""
    if (
        family == "string"
        and found.length is not None
        and target.length is not None
        and found.length < target.length
    ):
        return "widened"
    if family == "int" and _INT_RANK.get(found.type, 5) < _INT_RANK.get(target.type, 5):
        return "widened"
    if target.nullable and not found.nullable:
        return "made nullable"
    return None


def _mysql_family(type_: str) -> str:
    if type_ in _STRING:
        return "string"
    if type_ in _BINARY:
        return "binary"
    if type_ in _INT_RANK:
        return "int"
    if type_ in {"datetime", "timestamp"}:
        return "datetime"
    return type_


def plan_mysql(targets: list[Table], found: Inventory, names: dict[str, str], where: str) -> Plan:
    """The ALTER TABLE statements that bring the existing tables to `targets` (MySQL/MariaDB).
    `names` maps ``accountdb`` / ``status_server`` to the server's database names. Raises
    SchemaRefused (nothing planned is run) for a column that cannot be converted safely."""
    plan = Plan()
    for table in targets:
        columns = found.tables.get((table.database, table.name))
        if columns is None:
            continue  # created by the schema file
        qualified_table = f"`{names[table.database]}`.`{table.name}`"
        clauses: list[str] = []
        added: set[str] = set()
        for target in table.columns:
            qualified = f"{table.name}.{target.name}"
            column = columns.get(target.name.lower())
            if column is None:
                if not (target.nullable or target.has_default):
                    raise _refuse(where, qualified, "missing", type_text(target.declared))
                clauses.append(f"ADD COLUMN `{target.name}` {target.declared}")
                plan.changes.append(f"{qualified} added")
                added.add(target.name.lower())
                continue
            wanted, kind = _mysql_family(target.type), _mysql_family(column.type)
            if (
                wanted == "binary"
                and kind == "string"
                and (column.length or 0) <= (target.length or 0)
            ):
                # The original's CHAR(64) key: its text becomes the same bytes (see module doc).
                clauses.append(f"MODIFY COLUMN `{target.name}` {target.declared}")
                plan.changes.append(f"{qualified} converted from {column.declared} to bytes")
                plan.checks.append(
                    (
                        f"SELECT COUNT(*) FROM {qualified_table}"
                        f" WHERE OCTET_LENGTH(`{target.name}`) > {target.length}",
                        f"{where}: cannot upgrade the schema: {qualified} holds {{COUNT}} value(s)"
                        f" longer than {target.length} bytes, which {type_text(target.declared)}"
                        " cannot hold (nothing was changed)",
                    )
                )
                continue
            if wanted != kind or (
                wanted == "binary" and column.length is not None and column.length != target.length
            ):
                raise _refuse(where, qualified, column.declared, type_text(target.declared))
            change = _describe(column, target, kind)
            if change == "widened":
                clauses.append(f"MODIFY COLUMN `{target.name}` {target.declared}")
            elif change == "made nullable":
                clauses.append(f"MODIFY COLUMN `{target.name}` {column.declared} NULL")
            if change:
                plan.changes.append(f"{qualified} {change}")
        have = found.indexes.get((table.database, table.name), set())
        for index, indexed in table.indexes.items():
            if index.lower() in have:
                continue
            clauses.append(table.index_clauses[index])
            if not all(name.lower() in added for name in indexed):
                plan.changes.append(f"{table.name}.{index} added")
        if clauses:
            plan.statements.append(f"ALTER TABLE {qualified_table} " + ", ".join(clauses))
    return plan


def type_text(declared: str) -> str:
    """The type of a column definition, without its constraints: ``VARCHAR(255) NULL`` ->
    ``VARCHAR(255)``."""
    return _CONSTRAINT.split(declared, maxsplit=1)[0].strip()


def sqlite_affinity(declared: str) -> str:
    """SQLite's type affinity of a declared column type (its documented rules, in order)."""
    upper = declared.upper()
    if "INT" in upper:
        return "integer"
    if any(part in upper for part in ("CHAR", "CLOB", "TEXT")):
        return "text"
    if "BLOB" in upper or not upper.strip():
        return "blob"
    if any(part in upper for part in ("REAL", "FLOA", "DOUB")):
        return "real"
    return "numeric"


def plan_sqlite(targets: list[Table], found: Inventory, where: str) -> Plan:
    """ALTER TABLE ADD COLUMN, or a rebuild of the table, to bring the existing tables to
    `targets` (SQLite; run in one transaction, after dropping the view ``v_account``, which the
    schema file recreates). Raises SchemaRefused for a column that cannot be converted safely."""
    plan = Plan()
    for table in targets:
        columns = found.tables.get((table.database, table.name))
        if columns is None:
            continue
        rebuild = False
        adds: list[str] = []
        changes: list[str] = []
        declared_only: list[str] = []  # changes that only a rebuild's new declaration makes
        copied: dict[str, str] = {}  # target column -> expression over the old table
        for target in table.columns:
            qualified = f"{table.name}.{target.name}"
            column = columns.get(target.name.lower())
            if column is None:
                if not (target.nullable or target.has_default) or target.primary:
                    raise _refuse(where, qualified, "missing", type_text(target.declared))
                adds.append(
                    f"ALTER TABLE {table.database}.{table.name}"
                    f" ADD COLUMN {target.name} {target.declared}"
                )
                changes.append(f"{qualified} added")
                continue
            copied[target.name] = column.name
            wanted = sqlite_affinity(type_text(target.declared))
            kind = sqlite_affinity(column.declared)
            if wanted == "blob" and kind == "text":
                rebuild = True
                copied[target.name] = f"CAST({column.name} AS BLOB)"
                changes.append(f"{qualified} converted from {column.declared} text to bytes")
                continue
            if wanted != kind:
                found_type = column.declared or "untyped"
                raise _refuse(where, qualified, found_type, type_text(target.declared))
            if "INTEGER PRIMARY KEY" in target.declared.upper() and not (
                column.primary and column.declared.upper() == "INTEGER"
            ):
                rebuild = True
                changes.append(f"{qualified} made the row id")
                continue
            change = _describe(column, target, "string" if kind == "text" else "int")
            if target.nullable and not column.nullable:
                rebuild = True
                changes.append(f"{qualified} {change}")
            elif change:
                declared_only.append(f"{qualified} {change}")
        if not rebuild:
            plan.statements.extend(adds)
            plan.changes.extend(changes)
            continue
        plan.statements.extend(_rebuild(table, columns, copied))
        plan.changes.extend(changes + declared_only)
        plan.changes.append(f"{table.name} rebuilt")
    return plan


def _rebuild(table: Table, columns: dict[str, Column], copied: dict[str, str]) -> list[str]:
    """Statements that replace `table` by a new one made from its target CREATE statement, its
    rows copied (`copied`: target column -> expression), extra columns kept as NULL-able."""
    scratch = f"{table.name}__upgrade"
    create = re.sub(
        r"CREATE TABLE IF NOT EXISTS\s+\S+\s*\(",
        f"CREATE TABLE {table.database}.{scratch} (",
        table.create.strip(),
        count=1,
        flags=re.IGNORECASE,
    )
    known = {column.name.lower() for column in table.columns}
    extras = [column for key, column in columns.items() if key not in known]
    if extras:
        body_end = create.rstrip().rfind(")")
        extra_text = "".join(f",\n\t{c.name} {c.declared}" for c in extras)
        create = create[:body_end].rstrip() + extra_text + "\n" + create[body_end:]
    names = list(copied) + [column.name for column in extras]
    sources = list(copied.values()) + [column.name for column in extras]
    return [
        f"DROP TABLE IF EXISTS {table.database}.{scratch}",
        create,
        f"INSERT INTO {table.database}.{scratch} ({', '.join(names)})"
        f" SELECT {', '.join(sources)} FROM {table.database}.{table.name}",
        f"DROP TABLE {table.database}.{table.name}",
        f"ALTER TABLE {table.database}.{scratch} RENAME TO {table.name}",
    ]


def report(before: Inventory, after: Inventory, targets: list[Table], plan: Plan) -> SchemaReport:
    """What an init did, from the inventories taken before and after it and the plan it ran."""
    if (ACCOUNTDB, "account") not in before.tables and before.version is None:
        return SchemaReport(SCHEMA_VERSION, True, [])
    changes = list(plan.changes)
    for table in targets:
        key = (table.database, table.name)
        if table.name != VERSION_TABLE and key not in before.tables and key in after.tables:
            changes.append(f"{table.name} created")
    view = (ACCOUNTDB, VIEW)
    if view not in before.views:
        changes.append(f"{VIEW} created")
    elif before.views[view] != after.views.get(view):
        changes.append(f"{VIEW} recreated")
    if before.version != SCHEMA_VERSION:
        was = "none" if before.version is None else str(before.version)
        changes.append(f"version recorded (was {was})")
    return SchemaReport(SCHEMA_VERSION, False, changes)
