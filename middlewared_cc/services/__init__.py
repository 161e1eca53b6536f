"""Service modules: each declares its RPC methods in a MethodSet named ``methods``."""
