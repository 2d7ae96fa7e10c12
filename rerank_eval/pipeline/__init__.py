"""Running a benchmark: the plan (`plan`), each dataset prepared once (`prepare`), reranked in
journaled chunks (`score`, `journal`), evaluated and published with its manifest (`execute`,
`manifest`); `distributed`, `interrupt` and `progress` are how that work is shared across ranks,
stopped, and shown."""
