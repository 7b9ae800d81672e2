"""Workloads: request streams shared by the simulator, the benchmarks and the load generator."""

from kvroute.workloads.chat import ChatConfig, load_sharegpt, synthetic_chat
from kvroute.workloads.gsp import GSPConfig, GSPStream, generate_gsp, gsp_workload
from kvroute.workloads.loogle import LoogleConfig, load_loogle, synthetic_loogle
from kvroute.workloads.mooncake import load_mooncake, read_mooncake, write_mooncake
from kvroute.workloads.request import ClosedLoop, OpenLoop, Request, Workload, output_ids
from kvroute.workloads.tokenizer import BuiltinTokenizer, HFTokenizer, load_tokenizer

__all__ = ["BuiltinTokenizer", "ChatConfig", "ClosedLoop", "GSPConfig", "GSPStream",
           "HFTokenizer", "LoogleConfig", "OpenLoop", "Request", "Workload", "generate_gsp",
           "gsp_workload", "load_loogle", "load_mooncake", "load_sharegpt", "load_tokenizer",
           "output_ids", "read_mooncake", "synthetic_chat", "synthetic_loogle",
           "write_mooncake"]
