"""The applications that drive the runtime library, each owning its entry point: the `deghost` CLI (cli.py),
edit over files and folders locally and on Ray (edit/), the HTTP service (serve/), the web demo (demo/),
the evaluation driver (eval/) and the benchmark launcher (bench.py)."""
