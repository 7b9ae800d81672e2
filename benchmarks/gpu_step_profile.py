#!/usr/bin/env python3
"""Measure engine step times of a Llama-3.1-8B-shaped decoder and fit the
kvroute step-time model to them.

Standalone: needs only torch (no kvroute, numpy or scipy imports), so it runs on a bare GPU
machine. That is why ``features``/``predict`` below copy the formula of
``kvroute.sim.step_model`` instead of importing it; tests/sim/test_step_model.py checks
that kvroute's fitter reproduces this script's coefficients from its points.

Model being fitted (all times in ms), for one continuous-batching step with a
prefill set P (request i adds n_i new tokens on top of h_i cached tokens) and a
decode set D (request j has context l_j):

    N      = sum_P n_i + |D|
    T_lin  = max(T_w, T0 + b * N)
    T_attn = c * sum_P n_i * (h_i + n_i / 2) + g * sum_D l_j
    T_step = T_lin + T_attn            (constant overheads are absorbed in T_w / T0)

The decoder uses RANDOM bf16 weights, real per-layer KV cache tensors and
torch.nn.functional.scaled_dot_product_attention. Eager PyTorch, no CUDA graphs
(a few CUDA-graph decode points are measured separately for reference).

Usage:
    python3 benchmarks/gpu_step_profile.py --out profile.json     # full GPU run
    python3 benchmarks/gpu_step_profile.py --quick --out /tmp/q.json  # tiny CPU smoke run
"""

# ruff: noqa: E741  (l and I follow the design doc: context length l_j, intermediate size I)
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

try:  # torch >= 2.3
    from torch.nn.attention.bias import causal_lower_right
except Exception:  # pragma: no cover - older torch
    causal_lower_right = None

PROFILE_NAME = "h100-llama3-8b-measured"

FULL_CFG = dict(
    layers=32,
    hidden=4096,
    heads=32,
    kv_heads=8,
    head_dim=128,
    intermediate=14336,
    vocab=128256,
    rope_theta=500000.0,
    rms_eps=1e-5,
)
QUICK_CFG = dict(
    layers=2,
    hidden=256,
    heads=4,
    kv_heads=2,
    head_dim=64,
    intermediate=512,
    vocab=1024,
    rope_theta=500000.0,
    rms_eps=1e-5,
)

FULL_GRID = dict(
    prefill_n=[128, 256, 512, 1024, 2048, 4096, 8192],
    prefill_h=[0, 1024, 4096, 8192, 16384],
    decode_b=[1, 2, 4, 8, 16, 32, 64, 128, 256],
    decode_l=[512, 2048, 8192],
    # (n, h, B, l): one prefill chunk + a decode batch
    mixed=[
        (512, 0, 32, 2048),
        (256, 1024, 128, 512),
        (2048, 4096, 64, 2048),
        (1024, 8192, 16, 8192),
        (4096, 0, 8, 8192),
        (128, 16384, 256, 512),
    ],
)
QUICK_GRID = dict(
    prefill_n=[16, 64],
    prefill_h=[0, 32],
    decode_b=[1, 4],
    decode_l=[32, 128],
    mixed=[(16, 32, 4, 32)],
)

DESIGN_DOC = dict(
    t_w_ms=6.5,
    t0_ms=None,
    b_ms_per_token=0.020,
    c_ms_per_pair=1.06e-6,
    g_ms_per_token=5.6e-5,
    kv_pool_tokens=4.0e5,
)


def log(*a):
    print(*a, flush=True)


# --------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------
class Decoder:
    """Llama-shaped decoder with random weights; forward over a list of segments."""

    def __init__(self, cfg, device, dtype):
        self.cfg = cfg
        self.device = device
        self.dtype = dtype
        H, I, V = cfg["hidden"], cfg["intermediate"], cfg["vocab"]
        nh, nkv, hd = cfg["heads"], cfg["kv_heads"], cfg["head_dim"]
        self.dq, self.dk = nh * hd, nkv * hd
        g = torch.Generator(device=device)
        g.manual_seed(1234)

        def rand(*shape, std):
            t = torch.empty(*shape, dtype=dtype, device=device)
            t.normal_(0.0, std, generator=g)
            return t

        self.embed = rand(V, H, std=1.0)
        self.layers = []
        for _ in range(cfg["layers"]):
            self.layers.append(
                dict(
                    ln1=torch.ones(H, dtype=dtype, device=device),
                    wqkv=rand(self.dq + 2 * self.dk, H, std=H**-0.5),
                    wo=rand(H, self.dq, std=self.dq**-0.5),
                    ln2=torch.ones(H, dtype=dtype, device=device),
                    wgu=rand(2 * I, H, std=H**-0.5),
                    wd=rand(H, I, std=I**-0.5),
                )
            )
        self.norm = torch.ones(H, dtype=dtype, device=device)
        self.lm_head = rand(V, H, std=H**-0.5)
        self.n_params = sum(t.numel() for t in [self.embed, self.norm, self.lm_head]) + sum(
            t.numel() for lw in self.layers for t in lw.values()
        )
        self.n_params_linear = sum(
            lw[k].numel() for lw in self.layers for k in ("wqkv", "wo", "wgu", "wd")
        )
        self.rope_max = 0
        self._build_rope(4096)

    def _build_rope(self, max_pos):
        if max_pos <= self.rope_max:
            return
        hd = self.cfg["head_dim"]
        inv = 1.0 / (
            self.cfg["rope_theta"]
            ** (torch.arange(0, hd, 2, dtype=torch.float32, device=self.device) / hd)
        )
        t = torch.arange(max_pos, dtype=torch.float32, device=self.device)
        fr = torch.outer(t, inv)
        emb = torch.cat([fr, fr], dim=-1)
        self.cos = emb.cos().to(self.dtype)
        self.sin = emb.sin().to(self.dtype)
        self.rope_max = max_pos

    @staticmethod
    def _rope(x, cos, sin):
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
        rot = torch.cat((-x2, x1), dim=-1)
        return x * cos + rot * sin

    def forward(self, ids, pos, segs, logit_rows):
        cfg = self.cfg
        N = ids.shape[0]
        nh, nkv, hd, I = cfg["heads"], cfg["kv_heads"], cfg["head_dim"], cfg["intermediate"]
        x = F.embedding(ids, self.embed)
        cos = self.cos[pos].unsqueeze(1)
        sin = self.sin[pos].unsqueeze(1)
        for li, w in enumerate(self.layers):
            h = F.rms_norm(x, (cfg["hidden"],), w["ln1"], cfg["rms_eps"])
            qkv = F.linear(h, w["wqkv"])
            q = qkv[:, : self.dq].view(N, nh, hd)
            k = qkv[:, self.dq : self.dq + self.dk].view(N, nkv, hd)
            v = qkv[:, self.dq + self.dk :].view(N, nkv, hd)
            q = self._rope(q, cos, sin)
            k = self._rope(k, cos, sin)
            outs = [s.attend(li, q[s.lo : s.hi], k[s.lo : s.hi], v[s.lo : s.hi]) for s in segs]
            o = outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)
            x = x + F.linear(o, w["wo"])
            h = F.rms_norm(x, (cfg["hidden"],), w["ln2"], cfg["rms_eps"])
            gu = F.linear(h, w["wgu"])
            x = x + F.linear(F.silu(gu[:, :I]) * gu[:, I:], w["wd"])
        xl = F.rms_norm(x[logit_rows], (cfg["hidden"],), self.norm, cfg["rms_eps"])
        logits = F.linear(xl, self.lm_head)
        return logits.argmax(dim=-1)


# --------------------------------------------------------------------------
# attention segments over real KV cache tensors
# --------------------------------------------------------------------------
GQA_MODE = {"prefill": "enable_gqa"}  # or "repeat_kv" if the GQA path fails its check


def _sdpa_prefill(q4, k4, v4, n, total):
    """q4 (1, nh, n, hd); k4/v4 (1, nkv, total, hd); bottom-right causal."""
    if GQA_MODE["prefill"] == "repeat_kv":
        rep = q4.shape[1] // k4.shape[1]
        k4 = k4.repeat_interleave(rep, dim=1)
        v4 = v4.repeat_interleave(rep, dim=1)
        kw = {}
    else:
        kw = {"enable_gqa": True}
    if n == total:
        return F.scaled_dot_product_attention(q4, k4, v4, is_causal=True, **kw)
    if causal_lower_right is not None:
        return F.scaled_dot_product_attention(
            q4, k4, v4, attn_mask=causal_lower_right(n, total), **kw
        )
    # explicit bottom-right aligned mask
    i = torch.arange(n, device=q4.device).unsqueeze(1)
    j = torch.arange(total, device=q4.device).unsqueeze(0)
    mask = j <= i + (total - n)
    return F.scaled_dot_product_attention(q4, k4, v4, attn_mask=mask, **kw)


class PrefillSeg:
    """n new tokens on top of h cached; caches: per layer (1, h+n, nkv, hd)."""

    def __init__(self, lo, n, h, kc, vc):
        self.lo, self.hi, self.n, self.h, self.kc, self.vc = lo, lo + n, n, h, kc, vc

    def attend(self, li, q, k, v):
        n, h = self.n, self.h
        kc, vc = self.kc[li], self.vc[li]
        kc[0, h : h + n] = k
        vc[0, h : h + n] = v
        q4 = q.unsqueeze(0).transpose(1, 2)
        k4 = kc[:, : h + n].transpose(1, 2)
        v4 = vc[:, : h + n].transpose(1, 2)
        o = _sdpa_prefill(q4, k4, v4, n, h + n)
        return o.transpose(1, 2).reshape(n, -1)


DECODE_MODE = {
    "split": True,
    "target_ctas": 264,
    "min_chunk": 128,
}  # set from the device's SM count


def _attn_lse(q, k, v):
    """Non-causal attention returning (out (B,H,Lq,D), logsumexp (B,H,Lq) fp32)."""
    if q.device.type == "cuda":
        r = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v)
    else:
        r = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)
    return r[0], r[1]


def decode_splits(B, nkv, l, target_ctas, min_chunk=None):
    """Power-of-two split count for split-KV (flash-decoding style) decode."""
    min_chunk = DECODE_MODE["min_chunk"] if min_chunk is None else min_chunk
    want = max(1, math.ceil(target_ctas / (B * nkv)))
    S = 1
    while want >= S * 2 and l % (S * 2) == 0 and l // (S * 2) >= min_chunk:
        S *= 2
    return S


class DecodeSeg:
    """B requests, each with l cached tokens plus one new token.

    The query heads sharing a KV head are folded into the query-length axis
    (exact for decode: no mask), so each KV head is read once.

    splits == 0 ("plain"): caches per layer (B, l+1, nkv, hd); the new token's
    K/V is written at index l and one SDPA call attends over all l+1.
    splits >= 1 ("split-KV", flash-decoding style): caches per layer ctx
    (B, l, nkv, hd) plus a slot new (B, nkv, hd) the new token's K/V is written
    to; the l cached tokens are cut into S chunks attended in parallel and
    merged with the new token's term through their log-sum-exps, so small
    batches with long contexts still fill the GPU."""

    def __init__(self, lo, B, l, kc, vc, kn=None, vn=None, splits=0):
        self.lo, self.hi, self.B, self.l = lo, lo + B, B, l
        self.kc, self.vc, self.kn, self.vn, self.S = kc, vc, kn, vn, splits

    def attend(self, li, q, k, v):
        B, l, S = self.B, self.l, self.S
        kc, vc = self.kc[li], self.vc[li]
        nkv, hd = kc.shape[2], kc.shape[3]
        G = q.shape[1] // nkv
        qf = q.reshape(B, nkv, G, hd)
        if S == 0:  # plain
            kc[:, l] = k
            vc[:, l] = v
            return F.scaled_dot_product_attention(
                qf, kc.transpose(1, 2), vc.transpose(1, 2)
            ).reshape(B, -1)
        self.kn[li].copy_(k)
        self.vn[li].copy_(v)
        c = l // S
        kk = kc.view(B * S, c, nkv, hd).transpose(1, 2)
        vv = vc.view(B * S, c, nkv, hd).transpose(1, 2)
        qq = qf if S == 1 else qf.unsqueeze(1).expand(B, S, nkv, G, hd).reshape(B * S, nkv, G, hd)
        o, lse = _attn_lse(qq, kk, vv)
        o = o.reshape(B, S, nkv, G, hd).float()
        lse = lse[..., :G].reshape(B, S, nkv, G)
        s_new = (qf.float() * k.float().unsqueeze(2)).sum(-1) / math.sqrt(hd)  # (B, nkv, G)
        m = torch.maximum(lse.amax(1), s_new)
        w = torch.exp(lse - m.unsqueeze(1))
        w_new = torch.exp(s_new - m)
        num = (w.unsqueeze(-1) * o).sum(1) + w_new.unsqueeze(-1) * v.float().unsqueeze(2)
        den = w.sum(1) + w_new
        return (num / den.unsqueeze(-1)).to(q.dtype).reshape(B, -1)


class KVPool:
    """One flat random bf16 buffer; carve (layers, 2, B, L, nkv, hd) views from it."""

    def __init__(self, cfg, tokens, device, dtype):
        self.cfg = cfg
        self.per_tok = cfg["layers"] * 2 * cfg["kv_heads"] * cfg["head_dim"]
        self.tokens = tokens
        self.buf = torch.empty(tokens * self.per_tok, dtype=dtype, device=device)
        self.buf.normal_(0.0, 1.0)

    def views(self, off_tokens, B, L):
        c = self.cfg
        if off_tokens + B * L > self.tokens:
            raise MemoryError("kv pool too small")
        a = off_tokens * self.per_tok
        t = self.buf[a : a + B * L * self.per_tok].view(
            c["layers"], 2, B, L, c["kv_heads"], c["head_dim"]
        )
        return [t[i, 0] for i in range(c["layers"])], [t[i, 1] for i in range(c["layers"])]


# --------------------------------------------------------------------------
# step construction and timing
# --------------------------------------------------------------------------
def build_step(model, pool, prefill=None, decode=None, decode_splits_=0):
    """prefill: (n, h) or None; decode: (B, l) or None; decode_splits_: 0 = plain
    decode attention, S >= 1 = split-KV with S chunks. Returns a zero-arg callable."""
    dev = model.device
    segs, _ids, pos, rows = [], [], [], []
    lo, off = 0, 0
    if prefill is not None:
        n, h = prefill
        kc, vc = pool.views(off, 1, h + n)
        off += h + n
        segs.append(PrefillSeg(lo, n, h, kc, vc))
        pos.append(torch.arange(h, h + n, device=dev))
        rows.append(lo + n - 1)
        lo += n
    if decode is not None:
        B, l = decode
        S = decode_splits_
        c = model.cfg
        if S == 0:
            kc, vc = pool.views(off, B, l + 1)
            off += B * (l + 1)
            segs.append(DecodeSeg(lo, B, l, kc, vc))
        else:
            kc, vc = pool.views(off, B, l)
            off += B * l
            kn = torch.empty(
                c["layers"], B, c["kv_heads"], c["head_dim"], device=dev, dtype=model.dtype
            )
            vn = torch.empty_like(kn)
            segs.append(DecodeSeg(lo, B, l, kc, vc, list(kn), list(vn), S))
        pos.append(torch.full((B,), l, device=dev, dtype=torch.long))
        rows.extend(range(lo, lo + B))
        lo += B
    model._build_rope(int(max(p.max().item() for p in pos)) + 1)
    g = torch.Generator(device="cpu").manual_seed(lo)
    ids_t = torch.randint(0, model.cfg["vocab"], (lo,), generator=g).to(dev)
    pos_t = torch.cat(pos)
    rows_t = torch.tensor(rows, device=dev)

    def step():
        return model.forward(ids_t, pos_t, segs, rows_t)

    return step


class Timer:
    def __init__(self, device, budget_s, max_reps, min_reps=3, warmup=2):
        self.cuda = device.type == "cuda"
        self.budget_s, self.max_reps, self.min_reps, self.warmup = (
            budget_s,
            max_reps,
            min_reps,
            warmup,
        )

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def once(self, fn):
        if self.cuda:
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            e.synchronize()
            return s.elapsed_time(e)
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3

    def measure(self, fn):
        for _ in range(self.warmup):
            fn()
        self.sync()
        first = self.once(fn)
        reps = int(max(self.min_reps, min(self.max_reps, self.budget_s * 1e3 / max(first, 1e-3))))
        ts = [first] + [self.once(fn) for _ in range(reps - 1)]
        return dict(median_ms=statistics.median(ts), min_ms=min(ts), max_ms=max(ts), reps=len(ts))


# --------------------------------------------------------------------------
# correctness check of the attention paths (run on the target device)
# --------------------------------------------------------------------------
def _ref_attn(q, k, v, n, total):
    """float32 reference; q (nh, n, hd), k/v (nkv, total, hd), bottom-right causal."""
    rep = q.shape[0] // k.shape[0]
    k = k.float().repeat_interleave(rep, 0)
    v = v.float().repeat_interleave(rep, 0)
    s = q.float() @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
    i = torch.arange(n, device=q.device).unsqueeze(1)
    j = torch.arange(total, device=q.device).unsqueeze(0)
    s = s.masked_fill(~(j <= i + (total - n)), float("-inf"))
    return torch.softmax(s, -1) @ v


def check_attention(cfg, device, dtype):
    nh, nkv, hd = cfg["heads"], cfg["kv_heads"], cfg["head_dim"]
    res = {}
    torch.manual_seed(0)
    for mode in ("enable_gqa", "repeat_kv"):
        GQA_MODE["prefill"] = mode
        try:
            worst = 0.0
            for n, h in ((37, 0), (37, 50), (64, 200)):
                L = n + h
                kc = torch.randn(1, L, nkv, hd, device=device, dtype=dtype)
                vc = torch.randn(1, L, nkv, hd, device=device, dtype=dtype)
                q = torch.randn(n, nh, hd, device=device, dtype=dtype)
                kn = torch.randn(n, nkv, hd, device=device, dtype=dtype)
                vn = torch.randn(n, nkv, hd, device=device, dtype=dtype)
                seg = PrefillSeg(0, n, h, [kc], [vc])
                out = seg.attend(0, q, kn, vn).float()
                ref = _ref_attn(
                    q.transpose(0, 1), kc[0].transpose(0, 1), vc[0].transpose(0, 1), n, L
                )
                ref = ref.transpose(0, 1).reshape(n, -1)
                worst = max(worst, ((out - ref).norm() / ref.norm()).item())
            res["prefill_" + mode] = worst
            if worst < 2e-2:
                break
        except Exception as e:
            res["prefill_" + mode] = f"error: {str(e).splitlines()[0][:200]}"
    ok_prefill = any(isinstance(v, float) and v < 2e-2 for v in res.values())
    # decode: folded GQA, plain (S=0) and split-KV (S=1,2,4) against the reference
    B, l = 3, 64
    kc = torch.randn(B, l, nkv, hd, device=device, dtype=dtype)
    vc = torch.randn(B, l, nkv, hd, device=device, dtype=dtype)
    q = torch.randn(B, nh, hd, device=device, dtype=dtype)
    kn = torch.randn(B, nkv, hd, device=device, dtype=dtype)
    vn = torch.randn(B, nkv, hd, device=device, dtype=dtype)
    kfull = torch.cat([kc, kn.unsqueeze(1)], 1)
    vfull = torch.cat([vc, vn.unsqueeze(1)], 1)
    refs = [
        _ref_attn(
            q[b].unsqueeze(1), kfull[b].transpose(0, 1), vfull[b].transpose(0, 1), 1, l + 1
        ).reshape(-1)
        for b in range(B)
    ]
    worst = 0.0
    for S in (0, 1, 2, 4):
        try:
            if S == 0:
                seg = DecodeSeg(
                    0,
                    B,
                    l,
                    [torch.cat([kc, torch.zeros_like(kn).unsqueeze(1)], 1)],
                    [torch.cat([vc, torch.zeros_like(vn).unsqueeze(1)], 1)],
                )
            else:
                seg = DecodeSeg(
                    0, B, l, [kc], [vc], [torch.empty_like(kn)], [torch.empty_like(vn)], S
                )
            out = seg.attend(0, q, kn, vn).float()
            e = max(((out[b] - refs[b]).norm() / refs[b].norm()).item() for b in range(B))
        except Exception as ex:
            res[f"decode_split{S}"] = f"error: {str(ex).splitlines()[0][:200]}"
            if S > 0:
                DECODE_MODE["split"] = False
            continue
        res[f"decode_split{S}"] = e
        if S > 0 and e > 2e-2:
            DECODE_MODE["split"] = False
        if S in (0, 1):
            worst = max(worst, e)
    res["decode_split_kv_used"] = DECODE_MODE["split"]
    res["prefill_mode_used"] = GQA_MODE["prefill"]
    res["ok"] = bool(ok_prefill and worst < 2e-2)
    return res


def sdpa_backends(cfg, device, dtype):
    """Which SDPA backends PyTorch says it can use for representative shapes."""
    if device.type != "cuda":
        return {"note": "cpu: math/cpu-flash kernels"}
    try:
        from torch.backends.cuda import (
            SDPAParams,
            can_use_efficient_attention,
            can_use_flash_attention,
        )
    except Exception as e:
        return {"error": str(e)[:200]}
    nh, nkv, hd = cfg["heads"], cfg["kv_heads"], cfg["head_dim"]
    out = {}
    shapes = {
        "prefill_gqa": ((1, nh, 1024, hd), (1, nkv, 2048, hd), True),
        "decode_folded": ((8, nkv, nh // nkv, hd), (8, nkv, 2048, hd), False),
    }
    for name, (qs, ks, gqa) in shapes.items():
        q = torch.empty(qs, device=device, dtype=dtype)
        k = torch.empty(ks, device=device, dtype=dtype)
        try:
            p = SDPAParams(q, k, k, None, 0.0, False, gqa)
            out[name] = dict(
                flash=bool(can_use_flash_attention(p)),
                efficient=bool(can_use_efficient_attention(p)),
            )
        except Exception as e:
            out[name] = f"error: {str(e)[:200]}"
    return out


# --------------------------------------------------------------------------
# fit (pure torch, float64 least squares)
# --------------------------------------------------------------------------
def features(pt):
    N = A = L = 0.0
    if pt.get("n"):
        n, h = pt["n"], pt["h"]
        N += n
        A += n * (h + n / 2.0)
    if pt.get("B"):
        N += pt["B"]
        L += pt["B"] * pt["l"]
    return N, A, L


def predict(p, N, A, L):
    return (
        max(p["t_w_ms"], p["t0_ms"] + p["b_ms_per_token"] * N)
        + p["c_ms_per_pair"] * A
        + p["g_ms_per_token"] * L
    )


def fit(points):
    """Relative-error least squares of the max-model; knee found by enumerating
    which points sit on the weight-read floor (N <= threshold)."""
    X = [features(p) for p in points]
    T = [p["median_ms"] for p in points]
    Ns = sorted(set(x[0] for x in X))
    best = None
    for thr in [Ns[0] - 1.0, *Ns]:  # first candidate: no point on the floor
        rows, rhs = [], []
        for (N, A, L), t in zip(X, T, strict=False):
            fl = 1.0 if thr >= N else 0.0
            rows.append([fl / t, (1 - fl) / t, (1 - fl) * N / t, A / t, L / t])
            rhs.append(1.0)
        comp = [N for (N, _, _) in X if thr < N]
        if len(set(comp)) < 2:
            continue
        Am = torch.tensor(rows, dtype=torch.float64)
        bm = torch.tensor(rhs, dtype=torch.float64).unsqueeze(1)
        # column scaling for conditioning
        sc = Am.abs().max(dim=0).values.clamp_min(1e-30)
        sol = torch.linalg.lstsq(Am / sc, bm, driver="gelsd").solution.squeeze(1) / sc
        p = dict(
            t_w_ms=sol[0].item(),
            t0_ms=sol[1].item(),
            b_ms_per_token=sol[2].item(),
            c_ms_per_pair=sol[3].item(),
            g_ms_per_token=sol[4].item(),
        )
        errs = [(predict(p, *x) - t) / t for x, t in zip(X, T, strict=False)]
        sse = sum(e * e for e in errs)
        if best is None or sse < best[0]:
            best = (sse, p, errs, thr)
    sse, p, errs, thr = best
    knee = (p["t_w_ms"] - p["t0_ms"]) / p["b_ms_per_token"] if p["b_ms_per_token"] > 0 else None
    abs_errs = sorted(abs(e) for e in errs)
    return (
        p,
        dict(
            n_points=len(points),
            rel_rmse=math.sqrt(sse / len(points)),
            median_abs_rel_err=statistics.median(abs_errs),
            max_abs_rel_err=abs_errs[-1],
            floor_threshold_tokens=thr,
            knee_tokens=knee,
        ),
        errs,
    )


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------
def env_info(device):
    info = dict(
        torch=torch.__version__,
        cuda=torch.version.cuda,
        python=platform.python_version(),
        cudnn=(torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None),
        host=platform.node(),
    )
    if device.type == "cuda":
        prop = torch.cuda.get_device_properties(device)
        info.update(
            gpu_name=torch.cuda.get_device_name(device),
            gpu_total_memory_bytes=prop.total_memory,
            gpu_sm_count=prop.multi_processor_count,
            gpu_capability=f"{prop.major}.{prop.minor}",
        )
        try:
            r = subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=driver_version,clocks.max.sm,power.limit",
                    "--format=csv,noheader",
                ],
                capture_output=True,
                text=True,
                timeout=20,
            )
            info["nvidia_smi"] = r.stdout.strip()
        except Exception:
            pass
    else:
        info.update(gpu_name=None, cpu=platform.processor() or platform.machine())
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="tiny CPU smoke config (2 layers, small hidden)"
    )
    ap.add_argument("--out", default="gpu_step_profile.json")
    ap.add_argument(
        "--time-limit-s",
        type=float,
        default=420.0,
        help="skip remaining measurements after this much wall time",
    )
    ap.add_argument(
        "--point-budget-s",
        type=float,
        default=1.0,
        help="approximate timed seconds per point (repeats are capped by it)",
    )
    ap.add_argument("--no-graphs", action="store_true", help="skip the CUDA-graph decode points")
    args = ap.parse_args(argv)

    t_start = time.time()
    now = _dt.datetime.now(_dt.timezone.utc)
    cfg = QUICK_CFG if args.quick else FULL_CFG
    grid = QUICK_GRID if args.quick else FULL_GRID
    device = torch.device("cuda" if (torch.cuda.is_available() and not args.quick) else "cpu")
    dtype = torch.bfloat16
    if device.type == "cpu" and not args.quick:
        log("WARNING: no CUDA device; the full config on CPU will be very slow")
    torch.backends.cuda.matmul.allow_tf32 = True
    env = env_info(device)
    if device.type == "cuda":
        DECODE_MODE["target_ctas"] = 2 * env["gpu_sm_count"]
    elif args.quick:  # exercise the split-KV variant on the tiny config
        DECODE_MODE.update(target_ctas=16, min_chunk=16)
    log("env:", json.dumps(env))

    result = dict(
        name=PROFILE_NAME if not args.quick else PROFILE_NAME + "-QUICK-SMOKE",
        kind="measured",
        date=now.date().isoformat(),
        created_utc=now.isoformat(timespec="seconds"),
        source="benchmarks/gpu_step_profile.py" + (" --quick" if args.quick else ""),
        environment=env,
        model=dict(cfg, dtype="bfloat16", architecture="Llama-3.1-8B-shaped (random weights)"),
        method=(
            "random bf16 weights (Llama-3.1-8B shapes); every step shape captured once as a CUDA "
            "graph and timed by replay (CUDA events, median of repeats after warm-up), eager "
            "timings also recorded; torch SDPA flash attention: prefill with a bottom-right "
            "causal mask and "
            "enable_gqa; decode with the 4 query heads of each KV head folded into the query axis, "
            "timed both as one plain SDPA call and, where it applies, as split-KV (flash-decoding "
            "style: context cut into power-of-two chunks to fill ~2 CTAs per SM, merged by "
            "log-sum-exp in unfused torch ops), keeping the faster; unfused RMSNorm/RoPE/SwiGLU "
            "elementwise ops, cuBLAS matmuls, no torch.compile; contiguous (non-paged) per-layer "
            "KV cache tensors; LM head on the last prefill position and every decode token, "
            "greedy argmax, no sampling, "
            "scheduler or tokenizer overhead. Roughly an upper bound on a tuned engine's GPU step "
            "time (SGLang/vLLM add fused kernels, FlashInfer/FA3 paged attention), and a lower "
            "bound on its wall-clock step (no CPU scheduling work)."
        ),
        step_model=(
            "T_step = max(T_w, T0 + b*N) + c*sum_P n_i*(h_i + n_i/2) + g*sum_D l_j; "
            "N = sum_P n_i + |D|; constant per-step overhead absorbed in T_w and T0"
        ),
        units=dict(
            t_w_ms="ms",
            t0_ms="ms",
            b_ms_per_token="ms per batched token",
            c_ms_per_pair="ms per prefill query-key pair",
            g_ms_per_token="ms per decode context token",
            kv_pool_tokens="tokens",
        ),
        design_doc_starting_point=DESIGN_DOC,
        skipped=[],
    )

    def save():
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)

    def over_time():
        return time.time() - t_start > args.time_limit_s

    # ---- weights and memory
    if device.type == "cuda":
        torch.cuda.init()
        base_alloc = torch.cuda.memory_allocated()
    t0 = time.time()
    with torch.inference_mode():
        model = Decoder(cfg, device, dtype)
    if device.type == "cuda":
        torch.cuda.synchronize()
    log(f"weights built in {time.time() - t0:.1f}s: {model.n_params / 1e9:.3f}B params")
    kv_bytes_per_token = 2 * cfg["layers"] * cfg["kv_heads"] * cfg["head_dim"] * 2
    mem = dict(
        kv_bytes_per_token=kv_bytes_per_token,
        weight_bytes=model.n_params * 2,
        n_params=model.n_params,
        n_params_linear_layers=model.n_params_linear,
    )
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info()
        mem.update(
            total_bytes=total,
            free_after_weights_bytes=free,
            allocated_after_weights_bytes=torch.cuda.memory_allocated() - base_alloc,
        )
    result["memory"] = mem

    # ---- device ceilings for reading the fit (one copy, one matmul)
    if device.type == "cuda":
        with torch.inference_mode():
            x = torch.empty(1 << 30, dtype=dtype, device=device).normal_()
            y = torch.empty_like(x)
            tm = Timer(device, budget_s=0.2, max_reps=10)
            r = tm.measure(lambda: y.copy_(x))
            mem["copy_bw_TBps_read_plus_write"] = 2 * x.numel() * 2 / (r["median_ms"] * 1e-3) / 1e12
            del x, y
            a_ = torch.randn(8192, 8192, device=device, dtype=dtype)
            b_ = torch.randn(8192, 8192, device=device, dtype=dtype)
            r = tm.measure(lambda: a_ @ b_)
            mem["matmul_8192_bf16_TFLOPs"] = 2 * 8192**3 / (r["median_ms"] * 1e-3) / 1e12
            del a_, b_
            torch.cuda.empty_cache()
        log(
            "ceilings: copy {:.2f} TB/s, matmul {:.0f} TFLOP/s".format(
                mem["copy_bw_TBps_read_plus_write"], mem["matmul_8192_bf16_TFLOPs"]
            )
        )

    # ---- attention self-check
    with torch.inference_mode():
        chk = check_attention(cfg, device, dtype)
    result["attention_check"] = chk
    result["sdpa_backends"] = sdpa_backends(cfg, device, dtype)
    log("attention check:", chk, "backends:", result["sdpa_backends"])
    if not chk["ok"]:
        log("ERROR: attention paths disagree with the reference")
        save()
        return 2

    # ---- KV pool sized to what the grid needs and what fits
    need = max(
        [h + n for n in grid["prefill_n"] for h in grid["prefill_h"]]
        + [B * (l + 1) for B in grid["decode_b"] for l in grid["decode_l"]]
        + [h + n + B * (l + 1) for (n, h, B, l) in grid["mixed"]]
    )
    if device.type == "cuda":
        reserve = 8 << 30  # activations of an 8192-token prefill and allocator slack
        fit_tokens = int((torch.cuda.mem_get_info()[0] - reserve) // kv_bytes_per_token)
        pool_tokens = max(1, min(need, fit_tokens))
    else:
        pool_tokens = need
    pool = KVPool(cfg, pool_tokens, device, dtype)
    mem["bench_kv_buffer_tokens"] = pool_tokens
    log(
        f"kv buffer for the benchmark: {pool_tokens} tokens "
        f"({pool_tokens * kv_bytes_per_token / 2**30:.1f} GiB); grid needs up to {need}"
    )

    timer = Timer(device, budget_s=args.point_budget_s, max_reps=(5 if args.quick else 25))
    eager_timer = Timer(
        device, budget_s=args.point_budget_s / 3, max_reps=(5 if args.quick else 10), warmup=1
    )
    pts = dict(prefill=[], decode=[], mixed=[])
    act_peak = 0

    use_graphs = device.type == "cuda" and not args.no_graphs

    def capture(step):
        st = torch.cuda.Stream()
        st.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(st):
            for _ in range(2):
                step()
        torch.cuda.current_stream().wait_stream(st)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        return graph

    def measure_variant(prefill, decode, S):
        """eager + CUDA-graph timing of one step shape; returns a dict."""
        nonlocal act_peak
        out = {}
        with torch.inference_mode():
            step = build_step(model, pool, prefill, decode, S)
            if device.type == "cuda":
                torch.cuda.synchronize()
                before = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            out["eager"] = eager_timer.measure(step)
            if device.type == "cuda":
                act = torch.cuda.max_memory_allocated() - before
                act_peak = max(act_peak, act)
                out["activation_peak_bytes"] = act
            if use_graphs:
                try:
                    graph = capture(step)
                    out["graph"] = timer.measure(graph.replay)
                    del graph
                except Exception as e:
                    out["graph_error"] = str(e).splitlines()[0][:160]
                    log("graph capture failed:", out["graph_error"])
        del step
        if device.type == "cuda":
            torch.cuda.empty_cache()
        out["median_ms"] = (out.get("graph") or out["eager"])["median_ms"]
        return out

    def run_point(kind, rec, prefill=None, decode=None):
        if over_time():
            result["skipped"].append(dict(rec, kind=kind, why="time limit"))
            return
        variants = [0]
        if decode is not None and DECODE_MODE["split"]:
            S = decode_splits(decode[0], cfg["kv_heads"], decode[1], DECODE_MODE["target_ctas"])
            if S >= 2:
                variants.append(S)
        res = {}
        try:
            for S in variants:
                res[S] = measure_variant(prefill, decode, S)
        except (MemoryError, torch.OutOfMemoryError) as e:
            if not res:
                result["skipped"].append(dict(rec, kind=kind, why=f"memory: {str(e)[:120]}"))
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                return
        best = min(res, key=lambda S: res[S]["median_ms"])
        rec.update(res[best])
        if decode is not None:
            rec["decode_splits"] = best
            rec["decode_variants_ms"] = {
                ("plain" if S == 0 else f"split{S}"): res[S]["median_ms"] for S in res
            }
        rec["timing"] = "cuda_graph" if "graph" in rec else "eager"
        pts[kind].append(rec)
        g = rec.get("graph")
        ea = rec["eager"]
        shape = json.dumps({k: rec[k] for k in ("n", "h", "B", "l") if k in rec})
        g_ms = g["median_ms"] if g else float("nan")
        g_reps = g["reps"] if g else 0
        g_spread = 100 * (g["max_ms"] - g["min_ms"]) / g["median_ms"] if g else float("nan")
        e_spread = 100 * (ea["max_ms"] - ea["min_ms"]) / ea["median_ms"]
        log(
            f"{kind:<8} {shape:<40} graph {g_ms:9.3f} ms (reps {g_reps:2d}, "
            f"spread {g_spread:5.1f}%)   eager {ea['median_ms']:9.3f} ms "
            f"(spread {e_spread:5.1f}%) {json.dumps(rec.get('decode_variants_ms', ''))}"
        )

    # decode first (cheap), then prefill, then mixed
    for l in grid["decode_l"]:
        for B in grid["decode_b"]:
            if B * (l + 1) > pool_tokens:
                result["skipped"].append(dict(kind="decode", B=B, l=l, why="kv does not fit"))
                continue
            run_point("decode", dict(B=B, l=l), decode=(B, l))
    result["points"] = pts
    save()
    for h in grid["prefill_h"]:
        for n in grid["prefill_n"]:
            run_point("prefill", dict(n=n, h=h), prefill=(n, h))
    save()
    for n, h, B, l in grid["mixed"]:
        if h + n + B * (l + 1) > pool_tokens:
            result["skipped"].append(dict(kind="mixed", n=n, h=h, B=B, l=l, why="kv does not fit"))
            continue
        run_point("mixed", dict(n=n, h=h, B=B, l=l), prefill=(n, h), decode=(B, l))
    save()

    # ---- fit
    fit_pts = pts["prefill"] + pts["decode"]
    coef, ferr, errs = fit(fit_pts)
    for p, e in zip(fit_pts, errs, strict=False):
        p["fit_rel_err"] = e
    mixed_errs = []
    for p in pts["mixed"]:
        e = (predict(coef, *features(p)) - p["median_ms"]) / p["median_ms"]
        p["pred_ms"] = predict(coef, *features(p))
        p["fit_rel_err"] = e
        mixed_errs.append(abs(e))
        # additivity: mixed vs (prefill-alone + decode-alone) when both were measured
        pa = [q for q in pts["prefill"] if q["n"] == p["n"] and q["h"] == p["h"]]
        da = [q for q in pts["decode"] if q["B"] == p["B"] and q["l"] == p["l"]]
        if pa and da:
            p["prefill_alone_ms"] = pa[0]["median_ms"]
            p["decode_alone_ms"] = da[0]["median_ms"]
    if mixed_errs:
        ferr["mixed_median_abs_rel_err"] = statistics.median(mixed_errs)
        ferr["mixed_max_abs_rel_err"] = max(mixed_errs)
    result["coefficients"] = coef
    result["fit"] = ferr
    # the same fit on the eager (no CUDA graph) timings, for comparison
    eager_pts = [dict(p, median_ms=p["eager"]["median_ms"]) for p in fit_pts]
    coef_e, ferr_e, _ = fit(eager_pts)
    result["coefficients_eager"] = coef_e
    result["fit_eager"] = ferr_e

    # ---- KV pool at ~90% memory utilisation
    mem["activation_peak_bytes"] = act_peak
    if device.type == "cuda":
        usable = 0.90 * mem["total_bytes"] - mem["allocated_after_weights_bytes"]
        kv_pool = int((usable - act_peak) // kv_bytes_per_token)
        mem["kv_pool_rule"] = (
            "floor((0.90 * total - weights_allocated - activation_peak) / kv_bytes_per_token)"
        )
        mem["kv_pool_tokens_without_activation_reserve"] = int(usable // kv_bytes_per_token)
    else:
        kv_pool = None
    result["kv_pool_tokens"] = kv_pool
    coef_out = dict(coef, kv_pool_tokens=kv_pool)
    result["coefficients"] = coef_out

    # derived rates, for reading the numbers
    lin_flop_per_token = (
        2 * model.n_params_linear + 2 * cfg["hidden"] * cfg["vocab"] / 1
    )  # upper: LM head per token
    attn_flop_per_pair = 4 * cfg["head_dim"] * cfg["heads"] * cfg["layers"]
    result["derived"] = dict(
        weight_read_bandwidth_TBps=(mem["weight_bytes"] / (coef["t_w_ms"] * 1e-3) / 1e12)
        if coef["t_w_ms"] > 0
        else None,
        linear_TFLOPs_from_b=(2 * model.n_params_linear / (coef["b_ms_per_token"] * 1e-3) / 1e12)
        if coef["b_ms_per_token"] > 0
        else None,
        prefill_attention_TFLOPs_from_c=(attn_flop_per_pair / (coef["c_ms_per_pair"] * 1e-3) / 1e12)
        if coef["c_ms_per_pair"] > 0
        else None,
        decode_kv_read_TBps_from_g=(kv_bytes_per_token / (coef["g_ms_per_token"] * 1e-3) / 1e12)
        if coef["g_ms_per_token"] > 0
        else None,
        notes=(
            "linear TFLOP/s counts the 32 layers' matmuls only; attention TFLOP/s counts "
            "4*head_dim*heads*layers flop per query-key pair"
        ),
    )
    del lin_flop_per_token
    result["wall_time_s"] = round(time.time() - t_start, 1)
    save()

    # ---- summary table
    log("\n=== fitted coefficients (CUDA-graph timings; eager in parentheses) ===")
    for k, v in coef_out.items():
        d = DESIGN_DOC.get(k)
        e = coef_e.get(k)
        vv = v if v is not None else float("nan")
        ee = e if e is not None else float("nan")
        log(f"  {k:<16} {vv:<14.6g} ({ee:<12.6g}) design-doc {d}")
    log(f"  fit: {json.dumps(ferr)}")
    log(f"  fit eager: {json.dumps(ferr_e)}")
    log("  derived: {}".format(json.dumps(result["derived"])))
    log(f"  memory: {json.dumps(mem)}")
    log("prefill ms (rows h, cols n):")
    ns = grid["prefill_n"]
    log("  h\\n   " + " ".join(f"{n:8d}" for n in ns))
    for h in grid["prefill_h"]:
        row = []
        for n in ns:
            m = [p for p in pts["prefill"] if p["n"] == n and p["h"] == h]
            row.append(f"{m[0]['median_ms']:8.2f}" if m else f"{'-':>8}")
        log(f"  {h:6d} " + " ".join(row))
    log("decode ms (rows B, cols l):")
    log("  B\\l   " + " ".join(f"{l:8d}" for l in grid["decode_l"]))
    for B in grid["decode_b"]:
        row = []
        for l in grid["decode_l"]:
            m = [p for p in pts["decode"] if p["B"] == B and p["l"] == l]
            row.append(f"{m[0]['median_ms']:8.2f}" if m else f"{'-':>8}")
        log(f"  {B:6d} " + " ".join(row))
    log("wrote {} ({:.1f}s)".format(args.out, result["wall_time_s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
