"""Load tests share the chaos fixtures (throwaway servers, fresh database) and the slow gating."""

from tests.chaos.conftest import (  # noqa: F401
    chaos_env,
    chaos_servers,
    pytest_runtest_setup,
    start_daemon,
)
