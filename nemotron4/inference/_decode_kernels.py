"""Triton kernels of nemotron4.inference.decode_ops (imported lazily there: the CPU path never needs Triton)."""

import triton
import triton.language as tl

from nemotron4.inference._pdl import pdl_wait


@triton.jit
def add_ln_kernel(x_ptr, d_ptr, w_ptr, b_ptr, h_ptr, y_ptr, N, eps, HAS_DELTA: tl.constexpr,
                  BLOCK: tl.constexpr, USE_PDL: tl.constexpr, EARLY_LAUNCH: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    m = offs < N
    dtype = x_ptr.dtype.element_ty
    # parameters first: they do not depend on the kernel before
    gain = (tl.load(w_ptr + offs, mask=m, other=0.0).to(tl.float32) + 1.0).to(dtype).to(tl.float32)
    bias = tl.load(b_ptr + offs, mask=m, other=0.0).to(dtype).to(tl.float32)
    pdl_wait(USE_PDL, EARLY_LAUNCH)
    x = tl.load(x_ptr + row * N + offs, mask=m, other=0.0)
    if HAS_DELTA:  # the residual add, rounded to the stream's dtype as the unfused add
        x = (x.to(tl.float32) + tl.load(d_ptr + row * N + offs, mask=m, other=0.0).to(tl.float32)).to(dtype)
        tl.store(h_ptr + row * N + offs, x, mask=m)
    xf = x.to(tl.float32)
    mean = tl.sum(xf, axis=0) / N
    diff = tl.where(m, xf - mean, 0.0)
    var = tl.sum(diff * diff, axis=0) / N
    rstd = 1.0 / tl.sqrt(var + eps)
    tl.store(y_ptr + row * N + offs, (diff * rstd * gain + bias).to(y_ptr.dtype.element_ty), mask=m)

@triton.jit
def rope_tables(cos_ptr, sin_ptr, offs_d, ROT: tl.constexpr, dtype: tl.constexpr):
    """cos and the signed sin of rotate-half RoPE over offs_d (1 and 0 past ROT), rounded to dtype as
    model.apply_rope rounds them."""
    HALF: tl.constexpr = ROT // 2
    in_rot = offs_d < ROT
    cos = tl.load(cos_ptr + offs_d, mask=in_rot, other=1.0).to(dtype).to(tl.float32)
    sin = tl.load(sin_ptr + offs_d, mask=in_rot, other=0.0).to(dtype).to(tl.float32)
    return cos, tl.where(offs_d < HALF, -sin, sin)


@triton.jit
def rope_rows(ptrs, offs_d, row_ok, cos, sin, D: tl.constexpr, ROT: tl.constexpr):
    """Rows ptrs[:, None] + offs_d (masked by row_ok and D) with rotate-half RoPE on the first ROT dims (cos, sin:
    `rope_tables`), the result rounded to the rows' dtype."""
    ok = row_ok[:, None] & (offs_d < D)[None, :]
    x = tl.load(ptrs[:, None] + offs_d[None, :], mask=ok, other=0.0)
    if ROT > 0:
        dtype = x.dtype
        HALF: tl.constexpr = ROT // 2
        in_rot = offs_d < ROT
        partner = tl.where(offs_d < HALF, offs_d + HALF, tl.where(in_rot, offs_d - HALF, offs_d))
        x2 = tl.load(ptrs[:, None] + partner[None, :], mask=ok, other=0.0).to(tl.float32)
        x = (x.to(tl.float32) * cos[None, :] + x2 * sin[None, :]).to(dtype)
    return x


@triton.jit
def attend_tile(q, k, v, ok, m_i, l_i, acc, qk_scale, dtype: tl.constexpr):
    """One online-softmax step of q (G_PAD, D_PAD) over a tile of keys / values (BLOCK_N, D_PAD), ok the tile's
    attended slots; returns the updated running max, sum and output."""
    s = tl.dot(q, tl.trans(k).to(dtype)) * qk_scale  # (G_PAD, BLOCK_N), log2 units
    s = tl.where(ok[None, :], s, -1e30)
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.where(ok[None, :], tl.exp2(s - m_new[:, None]), 0.0)
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.dot(p.to(dtype), v.to(dtype))
    return m_new, l_i, acc


@triton.jit
def load_kv_tile(k_base, v_base, mask_ptr, n0, end, pos, sm_row, sm_s, sk_s, sv_s, offs_d, d_ok,
                 BLOCK_N: tl.constexpr, WRITE_KV: tl.constexpr):
    """The cached keys and values of slots n0..n0+BLOCK_N (BLOCK_N, D_PAD) and which of them are attended (before
    `end` and under the mask); with WRITE_KV slot pos is not read (this launch writes it: `with_new_kv`)."""
    offs_n = n0 + tl.arange(0, BLOCK_N)
    n_ok = offs_n < end
    ok = n_ok & (tl.load(mask_ptr + sm_row + offs_n * sm_s, mask=n_ok, other=0) != 0)
    kv_ok = n_ok[:, None] & d_ok[None, :]
    if WRITE_KV:
        kv_ok = kv_ok & (offs_n != pos)[:, None]
    k = tl.load(k_base + offs_n[:, None].to(tl.int64) * sk_s + offs_d[None, :], mask=kv_ok, other=0.0)
    v = tl.load(v_base + offs_n[:, None].to(tl.int64) * sv_s + offs_d[None, :], mask=kv_ok, other=0.0)
    return k, v, ok


@triton.jit
def with_new_kv(k, v, k_new, v_new, n0, pos, BLOCK_N: tl.constexpr):
    """The tile of slots n0..n0+BLOCK_N with this step's key and value at slot pos."""
    at_pos = (n0 + tl.arange(0, BLOCK_N) == pos)[:, None]
    return tl.where(at_pos, k_new.to(k.dtype), k), tl.where(at_pos, v_new.to(v.dtype), v)


@triton.jit
def attn_partial_kernel(q_ptr, k_ptr, v_ptr, kn_ptr, vn_ptr, mask_ptr, cos_ptr, sin_ptr, pos_ptr, o_ptr, ml_ptr,
                        S, qk_scale, sq_b, sq_h, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, skn_b, skn_h, svn_b, svn_h,
                        sm_b, sm_s,
                        KVH: tl.constexpr, G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr,
                        D_PAD: tl.constexpr, ROT: tl.constexpr, BLOCK_N: tl.constexpr, N_SPLITS: tl.constexpr,
                        WRITE_KV: tl.constexpr, USE_PDL: tl.constexpr, EARLY_LAUNCH: tl.constexpr):
    pid = tl.program_id(0)
    split = tl.program_id(1)
    b = pid // KVH
    h = pid % KVH
    offs_g = tl.arange(0, G_PAD)
    offs_d = tl.arange(0, D_PAD)
    g_ok = offs_g < G
    d_ok = offs_d < D
    dtype = q_ptr.dtype.element_ty
    k_base = k_ptr + b.to(tl.int64) * sk_b + h.to(tl.int64) * sk_h
    v_base = v_ptr + b.to(tl.int64) * sv_b + h.to(tl.int64) * sv_h
    # Before the PDL wait, everything that the kernel before (the QKV projection) does not write: the slot, the
    # mask, the RoPE tables and the first tile of this program's cached keys and values (slots before pos, written
    # by earlier steps), so that their memory latency overlaps that kernel's tail.
    pos = tl.load(pos_ptr)
    used = tl.minimum(pos + 1, S)  # slots 0..pos
    per = tl.cdiv(tl.cdiv(used, N_SPLITS), BLOCK_N) * BLOCK_N
    start = split * per
    end = tl.minimum(start + per, used)
    cos, sin = rope_tables(cos_ptr, sin_ptr, offs_d, ROT, dtype)
    k, v, ok = load_kv_tile(k_base, v_base, mask_ptr, start, end, pos, b * sm_b, sm_s, sk_s, sv_s, offs_d, d_ok,
                            BLOCK_N, WRITE_KV)
    pdl_wait(USE_PDL, EARLY_LAUNCH)
    q = rope_rows(q_ptr + b.to(tl.int64) * sq_b + (h * G + offs_g) * sq_h, offs_d, g_ok, cos, sin, D, ROT)
    if WRITE_KV:  # this step's key (RoPE'd here) and value: used for slot pos, written there by split 0
        one = tl.arange(0, 1)
        k_new = rope_rows(kn_ptr + b.to(tl.int64) * skn_b + h * skn_h + one, offs_d, one == 0, cos, sin, D, ROT)
        v_new = tl.load(vn_ptr + b.to(tl.int64) * svn_b + h * svn_h + offs_d[None, :], mask=d_ok[None, :],
                        other=0.0)  # (1, D_PAD)
        if split == 0:
            tl.store(k_base + pos * sk_s + offs_d[None, :], k_new.to(k_ptr.dtype.element_ty), mask=d_ok[None, :])
            tl.store(v_base + pos * sv_s + offs_d[None, :], v_new.to(v_ptr.dtype.element_ty), mask=d_ok[None, :])
        k, v = with_new_kv(k, v, k_new, v_new, start, pos, BLOCK_N)
    m_i = tl.full([G_PAD], -1e30, dtype=tl.float32)
    l_i = tl.zeros([G_PAD], dtype=tl.float32)
    acc = tl.zeros([G_PAD, D_PAD], dtype=tl.float32)
    m_i, l_i, acc = attend_tile(q, k, v, ok, m_i, l_i, acc, qk_scale, dtype)
    for n0 in range(start + BLOCK_N, end, BLOCK_N):
        k, v, ok = load_kv_tile(k_base, v_base, mask_ptr, n0, end, pos, b * sm_b, sm_s, sk_s, sv_s, offs_d, d_ok,
                                BLOCK_N, WRITE_KV)
        if WRITE_KV:
            k, v = with_new_kv(k, v, k_new, v_new, n0, pos, BLOCK_N)
        m_i, l_i, acc = attend_tile(q, k, v, ok, m_i, l_i, acc, qk_scale, dtype)
    heads = b * (KVH * G) + h * G + offs_g  # (row, query head) index
    qd_ok = g_ok[:, None] & d_ok[None, :]
    if N_SPLITS == 1:
        out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        tl.store(o_ptr + heads.to(tl.int64)[:, None] * D + offs_d[None, :], out.to(o_ptr.dtype.element_ty),
                 mask=qd_ok)
    else:
        slot = heads.to(tl.int64) * N_SPLITS + split
        tl.store(o_ptr + slot[:, None] * D + offs_d[None, :], acc, mask=qd_ok)
        tl.store(ml_ptr + slot * 2, m_i, mask=g_ok)
        tl.store(ml_ptr + slot * 2 + 1, l_i, mask=g_ok)

@triton.jit
def attn_combine_kernel(ws_ptr, ml_ptr, o_ptr, D: tl.constexpr, D_PAD: tl.constexpr, N_SPLITS: tl.constexpr,
                        SPLITS_PAD: tl.constexpr, USE_PDL: tl.constexpr, EARLY_LAUNCH: tl.constexpr):
    head = tl.program_id(0).to(tl.int64)  # row * H + query head
    offs_s = tl.arange(0, SPLITS_PAD)
    offs_d = tl.arange(0, D_PAD)
    s_ok = offs_s < N_SPLITS
    pdl_wait(USE_PDL, EARLY_LAUNCH)
    slot = head * N_SPLITS + offs_s
    m = tl.load(ml_ptr + slot * 2, mask=s_ok, other=-1e30)
    lsum = tl.load(ml_ptr + slot * 2 + 1, mask=s_ok, other=0.0)
    w = tl.exp2(m - tl.max(m, axis=0))
    denom = tl.sum(lsum * w, axis=0)
    acc = tl.load(ws_ptr + slot[:, None] * D + offs_d[None, :], mask=s_ok[:, None] & (offs_d < D)[None, :],
                  other=0.0)
    out = tl.sum(acc * w[:, None], axis=0) / tl.where(denom > 0, denom, 1.0)
    tl.store(o_ptr + head * D + offs_d, out.to(o_ptr.dtype.element_ty), mask=offs_d < D)
