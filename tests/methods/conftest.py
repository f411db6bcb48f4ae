from tests.engines.conftest import tiny_data  # noqa: F401  (shared session fixture)
