"""The scale-out store: Apache Spark (PySpark) over Parquet tables in a warehouse folder.

URL form: ``spark://MASTER?warehouse=DIR[&shuffle_partitions=N]``, e.g.
``spark://local[2]?warehouse=/data/jl``. Each canonical table is a folder of
Parquet files ``DIR/<table>/``; a Spark temporary view of the same name is
registered for Ibis. One SparkSession is shared per process.

Appends stage chunks as Parquet under ``DIR/_staging/``, let Spark drop rows
whose key is already present (or repeated within the append), write the new
rows to a staging folder and then move the finished files into the table
folder. Readers therefore never see a half-written file.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import ibis
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from journeylens import schema
from journeylens.errors import ConfigError, StoreError
from journeylens.store.base import Appender, AppendResult, Store, empty_table

_META_FILE = "_journeylens_meta.json"


def spark_session(master: str = "local[2]", shuffle_partitions: int = 4) -> Any:
    """The process-wide SparkSession, configured for UTC and modest local resources."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - depends on installation
        raise ConfigError("the Spark backend needs PySpark", hint="pip install 'journeylens[spark]'") from exc
    session = (
        SparkSession.builder.master(master)
        .appName("journeylens")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.driver.memory", "2g")
        .config("spark.sql.ansi.enabled", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


def parse_spark_url(url: str) -> tuple[str, Path, int]:
    """Split ``spark://MASTER?warehouse=DIR`` into (master, warehouse, shuffle partitions)."""
    if not url.startswith("spark://"):
        raise ConfigError(f"not a Spark store URL: {url}")
    rest = url.removeprefix("spark://")
    master, _, query = rest.partition("?")
    master = master or "local[2]"
    params = parse_qs(query)
    if "warehouse" not in params:
        raise ConfigError(
            f"Spark store URL needs a warehouse folder: {url}",
            hint="e.g. spark://local[2]?warehouse=./warehouse",
        )
    partitions = int(params.get("shuffle_partitions", ["4"])[0])
    return master, Path(params["warehouse"][0]).expanduser().resolve(), partitions


class SparkAppender(Appender):
    def __init__(self, store: SparkStore, name: str, key: Sequence[str]) -> None:
        self.store = store
        self.name = name
        self.key = list(key)
        self.dir = store.warehouse / "_staging" / f"{name}-{uuid.uuid4().hex}"
        (self.dir / "in").mkdir(parents=True)
        self.rows = 0
        self.parts = 0

    def write(self, chunk: pa.Table) -> None:
        if chunk.num_rows == 0:
            return
        chunk = Store._conform(self.name, chunk)
        pq.write_table(chunk, self.dir / "in" / f"part-{self.parts:05d}.parquet")
        self.parts += 1
        self.rows += chunk.num_rows

    def commit(self) -> AppendResult:
        try:
            if self.rows == 0:
                return AppendResult(0, 0)
            spark = self.store.spark
            staged = spark.read.parquet(str(self.dir / "in"))
            if self.key:
                staged = staged.dropDuplicates(self.key)
                existing = spark.read.parquet(str(self.store.table_dir(self.name))).select(*self.key)
                staged = staged.join(existing, on=self.key, how="left_anti")
            out = self.dir / "out"
            staged.write.mode("overwrite").parquet(str(out))
            inserted = int(spark.read.parquet(str(out)).count())
            target = self.store.table_dir(self.name)
            batch = uuid.uuid4().hex[:12]
            for i, f in enumerate(sorted(out.glob("*.parquet"))):
                f.rename(target / f"part-{batch}-{i:05d}.parquet")
            self.store.refresh(self.name)
            return AppendResult(inserted, self.rows - inserted)
        finally:
            self.abort()

    def abort(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class SparkStore(Store):
    backend = "spark"

    def __init__(self, url: str) -> None:
        self.url = url
        master, self.warehouse, partitions = parse_spark_url(url)
        self.warehouse.mkdir(parents=True, exist_ok=True)
        self.spark = spark_session(master, partitions)
        self.con: Any = ibis.pyspark.connect(self.spark)
        self.prefix = f"jl_{uuid.uuid4().hex[:8]}_"  # views are session-global: keep stores apart
        self._check_version(self.meta().get("schema_version"), url)
        if not (self.warehouse / _META_FILE).exists():
            (self.warehouse / _META_FILE).write_text(json.dumps({"schema_version": str(schema.SCHEMA_VERSION)}))
        for spec in schema.TABLES.values():
            d = self.table_dir(spec.name)
            if not d.exists():
                d.mkdir(parents=True)
                pq.write_table(empty_table(spec.name), d / "part-empty.parquet")
            self.refresh(spec.name)

    def table_dir(self, name: str) -> Path:
        return self.warehouse / name

    def refresh(self, name: str) -> None:
        """Re-register the temporary view so Spark sees files added since."""
        try:
            df = self.spark.read.parquet(str(self.table_dir(name)))
        except Exception as exc:
            raise StoreError(f"cannot read table {name} in {self.warehouse}: {exc}".splitlines()[0]) from exc
        df.createOrReplaceTempView(self.prefix + name)

    def table(self, name: str) -> Any:
        if name not in schema.TABLES:
            return super().table(name)  # raises UnknownNameError
        return self.con.table(self.prefix + name)

    def meta(self) -> dict[str, str]:
        f = self.warehouse / _META_FILE
        return dict(json.loads(f.read_text())) if f.exists() else {}

    def appender(self, name: str, key: Sequence[str] | None = None) -> Appender:
        self.table(name)
        return SparkAppender(self, name, schema.TABLES[name].key if key is None else key)

    def replace_workspace_rows(self, name: str, workspace: str, data: pa.Table) -> None:
        data = self._conform(name, data)
        d = self.table_dir(name)
        current = ds.dataset(str(d), format="parquet").to_table()
        keep = current.filter(ds.field("workspace") != workspace) if current.num_rows else current
        merged = pa.concat_tables([self._conform(name, keep), data])
        tmp = self.warehouse / "_staging" / f"{name}-replace-{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        pq.write_table(merged, tmp / "part-00000.parquet")
        old = self.warehouse / "_staging" / f"{name}-old-{uuid.uuid4().hex}"
        d.rename(old)
        tmp.rename(d)
        shutil.rmtree(old, ignore_errors=True)
        self.refresh(name)

    def replace_workspace_rows_from(self, name: str, workspace: str, expr: Any) -> None:
        """Replace all rows of ``workspace`` in table ``name`` by the rows of the Ibis expression
        ``expr`` (same columns), computed by Spark: the other workspaces' rows and the new rows
        are written to a staging folder that then replaces the table folder."""
        self.table(name)
        spec = schema.TABLES[name]
        types = spec.ibis_schema()
        current = self.table(name)
        keep = current.filter(current.workspace != ibis.literal(workspace))
        new = expr.select(**{c: expr[c].cast(types[c]) for c in spec.names})
        merged = keep.select(**{c: keep[c].cast(types[c]) for c in spec.names}).union(new)
        tmp = self.warehouse / "_staging" / f"{name}-replace-{uuid.uuid4().hex}"
        self.con.to_parquet_dir(merged, str(tmp))
        if not any(tmp.glob("*.parquet")):  # no rows at all: keep a schema-bearing empty file
            pq.write_table(empty_table(name), tmp / "part-empty.parquet")
        d = self.table_dir(name)
        old = self.warehouse / "_staging" / f"{name}-old-{uuid.uuid4().hex}"
        d.rename(old)
        tmp.rename(d)
        shutil.rmtree(old, ignore_errors=True)
        self.refresh(name)

    def set_meta(self, key: str, value: str) -> None:
        """Set one key of the store's meta file (e.g. a derived table's build marker)."""
        f = self.warehouse / _META_FILE
        data = self.meta()
        data[key] = value
        tmp = f.with_suffix(f".{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(data))
        tmp.rename(f)

    def close(self) -> None:
        """The SparkSession is shared by the process and stays up."""
