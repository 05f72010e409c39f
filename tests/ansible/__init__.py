"""Provisioning tests: the Ansible roles under ansible/ run against Debian hosts booted with
systemd-nspawn in private network namespaces (lab.py builds and boots them)."""
