"""auth-service: authentication and identity microservice."""

__version__ = "0.1.0"
