"""Start and supervise dtrain's processes: local workers (and, later, hostfile/ssh, Slurm, k8s)."""
