"""The mlqueue HTTP client and command line: they speak HTTP only and import no server module."""
