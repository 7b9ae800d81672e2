"""Workloads: request streams shared by the simulator, the benchmarks and the load generator."""

from kvroute.workloads.gsp import GSPConfig, GSPStream, generate_gsp

__all__ = ["GSPConfig", "GSPStream", "generate_gsp"]
