"""A development Kafka broker: one KRaft node on 127.0.0.1 from Maven Central jars, for the
tests, ``streamer demo``, ``soak``, ``bench-pipeline`` and ``streamer kafka start|stop``.

Development tooling, not the product: the camera, the worker and the sink reach whatever
cluster ``bootstrap_servers`` names and never import this package (``tests/test_layout.py``
checks it). The commands that start a broker import it when they do.

:mod:`versions` holds the supported releases, :mod:`jars` fetches a release's jars,
:mod:`broker` formats, starts and stops the broker, and :mod:`certificates` makes the local CA
of its SASL_SSL listener; ``pom.xml`` and the ``log4j*.properties`` templates are package data.
"""
