"""The plumbing wing: how the methods run and where their results go, and nothing about the methods.

``datasets`` (a user's manifest or image folder as a table), ``shards`` (deterministic, resumable
Parquet shards), ``raydata`` (the one module that knows Ray Data), ``runs`` (run folders, the
models a run uses, metrics and progress), ``tracking`` (the shared MLflow store, pipeline and
command runs) and ``registry`` (registered models). Import the modules themselves: Ray and MLflow
are loaded only by the modules that need them.
"""
