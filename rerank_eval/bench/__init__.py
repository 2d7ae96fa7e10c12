"""The project's own speed and memory measurements: the listwise model (`listwise`), the dense
encoder (`encoder`), the doc store and BM25 index builds (`index`), and their tables (`table`)."""
