"""Batch scoring: the API's decision step over a whole snapshot, locally or on Spark.

Typical use::

    from serving.batch.local import score_local
    from serving.batch.output import open_output

    with open_output(Path("wave.parquet")) as out:
        result = score_local(snapshot, decider, out, wave=wave)
"""
