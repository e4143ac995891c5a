"""Fault tests run the real service like the end-to-end tests, with the same harness."""

from tests.e2e.conftest import (DATA, PASSWORDS, Api, Service, api_for,  # noqa: F401
                                service_factory, shared_kernel_cache)
