"""The job engine under every front end: a run described once (``spec``), checked once (``checks``),
keyed for resume (``resume``) and run by one batch runner (``runner``: ``local`` threads or ``ray_exec``).

The command line, the web app and the Label Studio front end build a ``JobSpec`` and call
``runner.run_job``; none of them loops over photos, writes a manifest or checks options itself.
"""
