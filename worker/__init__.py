"""signout-worker: signs compromised users out of Amazon Cognito from Kafka requests."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("signout-worker")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
