from reliability_inputs import good_world  # noqa: F401  (the session fixture every case reads)
