"""Analysis: post-hoc instruments, tables and figures."""
