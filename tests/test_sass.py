"""Tests of fastrnn/sass.py: hand-written SASS in cuobjdump's and nvdisasm's formats, and one real
kernel compiled for sm_90 (no GPU needed)."""
import os
import subprocess
import sys

import pytest
import triton
import triton.language as tl

from fastrnn import sass

# cuobjdump -sass of a made-up kernel: an outer loop 0x20-0xf0 holding loop A 0x60-0xb0 (two
# backward branches to 0x60) holding loop G 0x70-0x80; a forward branch at 0x30 that is no loop;
# a NOP and the closing `BRA` to itself, which parse drops.
TOY = """
	code for sm_90a
		Function : toy_kernel
	.headerflags	@"EF_CUDA_ACCELERATORS EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
        /*0000*/                   LDC R1, c[0x0][0x28] ;                 /* 0x00000a00ff017b82 */
                                                                          /* 0x000ff00000000800 */
        /*0010*/                   S2R R0, SR_TID.X ;                     /* 0x0000000000007919 */
                                                                          /* 0x000e220000002100 */
        /*0020*/                   LDG.E R2, desc[UR4][R4.64] ;           /* 0x0000000404027981 */
                                                                          /* 0x000ea2000c1e1900 */
        /*0030*/               @P0 BRA 0x60 ;                             /* 0x00000000000c0947 */
                                                                          /* 0x000fea0003800000 */
        /*0040*/                   MUFU.TANH R3, R2 ;                     /* 0x0000000200037308 */
                                                                          /* 0x004e240000002400 */
        /*0050*/                   NOP ;                                  /* 0x0000000000007918 */
                                                                          /* 0x000fc00000000000 */
        /*0060*/                   HMMA.16816.F32.BF16 R8, R12, R16, R8 ; /* 0x000000100c08723c */
                                                                          /* 0x000fde0000041808 */
        /*0070*/                   LDS.U.128 R12, [R3] ;                  /* 0x0000000003047984 */
                                                                          /* 0x000e280000000c00 */
        /*0080*/               @P1 BRA 0x70 ;                             /* 0xfffffffc00f81947 */
                                                                          /* 0x000fea000383ffff */
        /*0090*/               @P2 BRA 0x60 ;                             /* 0xfffffffc00f02947 */
                                                                          /* 0x000fea000383ffff */
        /*00a0*/                   LDSM.16.M88.4 R16, [R3+0x100] ;        /* 0x000100000310783b */
                                                                          /* 0x000e280000000200 */
        /*00b0*/          @!P3 BRA 0x60 ;                                 /* 0xfffffffc00e8b947 */
                                                                          /* 0x000fea000383ffff */
        /*00c0*/                   STS [R3], R8 ;                         /* 0x0000000803007388 */
                                                                          /* 0x0001e80000000800 */
        /*00d0*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;          /* 0x0000000000007b1d */
                                                                          /* 0x000fec0000010000 */
        /*00e0*/                   STG.E desc[UR4][R6.64], R8 ;           /* 0x0000000806007986 */
                                                                          /* 0x000fe2000c101904 */
        /*00f0*/               @P4 BRA 0x20 ;                             /* 0xfffffffc00c84947 */
                                                                          /* 0x000fea000383ffff */
        /*0100*/                   EXIT ;                                 /* 0x000000000000794d */
                                                                          /* 0x000fea0003800000 */
        /*0110*/                   BRA 0x110;                             /* 0xfffffffc00fc7947 */
                                                                          /* 0x000fc0000383ffff */
        /*0120*/                   NOP;                                   /* 0x0000000000007918 */
                                                                          /* 0x000fc00000000000 */
		..........
"""

# nvdisasm prints branch targets as labels, and data sections with offsets too
TOY_NVDISASM = """
.nv.info.toy_kernel:
        /*0000*/ 	.byte	0x04, 0x0a, 0x08, 0x00
.text.toy_kernel:
        /*0000*/                   S2R R0, SR_TID.X ;
.L_x_1:
        /*0010*/                   LDG.E R2, desc[UR4][R4.64] ;
        /*0020*/               @P0 BRA `(.L_x_0) ;
        /*0030*/                   FADD R3, R2, R2 ;
.L_x_0:
        /*0040*/               @P1 BRA `(.L_x_1) ;
        /*0050*/                   EXIT ;
.L_x_2:
        /*0060*/                   BRA `(.L_x_2);
.L_x_3:
"""


def _sass(*lines):
    """cuobjdump-style text of `lines`, one instruction each at offsets 0x0, 0x10, ..."""
    return "\n".join(f"        /*{16 * k:04x}*/  {line} ;" for k, line in enumerate(lines))


def _spans(tree):
    return [((loop.start, loop.end), _spans(loop.children)) for loop in tree]


def test_parse_instructions():
    instrs = sass.parse(TOY)
    assert [i.offset for i in instrs] == [0x00, 0x10, 0x20, 0x30, 0x40, 0x60, 0x70, 0x80, 0x90, 0xa0, 0xb0,
                                          0xc0, 0xd0, 0xe0, 0xf0, 0x100]  # no NOP, no closing BRA 0x110
    by_offset = {i.offset: i for i in instrs}
    assert by_offset[0x60].opcode == "HMMA.16816.F32.BF16"
    assert by_offset[0xb0] == sass.Instr(0xb0, "BRA", "@!P3 BRA 0x60", 0x60)
    assert by_offset[0x30].target == 0x60  # forward
    assert by_offset[0x100].opcode == "EXIT" and by_offset[0x100].target is None
    assert by_offset[0x20].target is None  # LDG's hex-looking operands are no target


def test_parse_nvdisasm_labels():
    instrs = sass.parse(TOY_NVDISASM)
    assert [(i.offset, i.opcode, i.target) for i in instrs] == [
        (0x00, "S2R", None), (0x10, "LDG.E", None), (0x20, "BRA", 0x40), (0x30, "FADD", None),
        (0x40, "BRA", 0x10), (0x50, "EXIT", None)]
    assert _spans(sass.loops(instrs)) == [((0x10, 0x40), [])]


def test_parse_rejects_two_functions_and_no_code():
    with pytest.raises(ValueError, match="more than one function"):
        sass.parse(TOY + TOY.replace("toy_kernel", "other_kernel"))
    with pytest.raises(ValueError, match="no SASS"):
        sass.parse("\tcode for sm_90a\n")


def test_loops_nest_and_merge_back_branches():
    tree = sass.loops(sass.parse(TOY))
    assert _spans(tree) == [((0x20, 0xf0), [((0x60, 0xb0), [((0x70, 0x80), [])])])]
    outer = tree[0]
    a = outer.children[0]
    g = a.children[0]
    assert [i.offset for i in outer.own] == [0x20, 0x30, 0x40, 0xc0, 0xd0, 0xe0, 0xf0]
    assert [i.offset for i in a.own] == [0x60, 0x90, 0xa0, 0xb0]
    assert [i.offset for i in g.own] == [0x70, 0x80]
    assert (outer.size, a.size, g.size) == (13, 6, 2)


def test_loops_crossing_ranges_merge_and_siblings_stay_apart():
    crossing = sass.parse(_sass("MOV R0, RZ", "IADD3 R0, R0, 0x1, RZ", "FADD R1, R1, R1", "MOV R2, R0",
                                "@P0 BRA 0x10", "FMUL R1, R1, R1", "@P1 BRA 0x30", "EXIT"))
    tree = sass.loops(crossing)
    assert _spans(tree) == [((0x10, 0x60), [])]
    assert len(tree[0].own) == 6
    # back branches right after one another (0x40, 0x50): two sibling loops inside the outer one
    siblings = sass.parse(_sass("MOV R0, RZ", "FADD R1, R1, R1", "@P0 BRA 0x10", "FMUL R1, R1, R1",
                                "@P1 BRA 0x30", "@P2 BRA 0x0", "EXIT"))
    assert _spans(sass.loops(siblings)) == [((0x0, 0x50), [((0x10, 0x20), []), ((0x30, 0x40), [])])]


def test_per_iteration_multiplies_trips_by_depth():
    outer = sass.loops(sass.parse(TOY))[0]
    seen = []

    def trips(loop, depth):
        seen.append((loop.start, depth))
        return {1: 5, 2: 2}[depth]

    counts = sass.per_iteration(outer, trips)
    # outer own 7 + 5 x (A own 4 + 2 x G own 2)
    assert counts["total"] == 7 + 5 * (4 + 2 * 2)
    assert (counts["mma"], counts["lds"], counts["sts"], counts["ldg"], counts["stg"]) == (5, 5 * (1 + 2), 1, 1, 1)
    assert (counts["bar"], counts["sfu"], counts["branch"], counts["atom"]) == (1, 1, 2 + 5 * (2 + 2), 0)
    assert seen == [(0x60, 1), (0x70, 2)]
    a = outer.children[0]
    assert sass.per_iteration(a, trips)["total"] == 4 + 5 * 2  # depth counts from the loop asked about
    assert sass.per_iteration(outer, lambda loop, depth: 0)["total"] == 7


def test_every_class_has_a_reason():
    assert all(ops and reason for ops, reason in sass.CLASSES.values())
    assert {"mma", "ldg", "stg", "lds", "sts", "atom", "membar", "bar", "branch", "sfu"} <= set(sass.CLASSES)


def test_outer_loop_is_the_largest_top_level_loop():
    instrs = sass.parse(_sass("FADD R1, R1, R1", "@P0 BRA 0x0", "MOV R0, RZ", "FADD R1, R1, R1",
                              "FMUL R1, R1, R1", "@P1 BRA 0x20", "EXIT"))
    tree = sass.loops(instrs)
    assert [loop.size for loop in tree] == [2, 4]
    assert sass.outer_loop(tree) is tree[1]
    with pytest.raises(ValueError, match="no loop"):
        sass.outer_loop(sass.loops(sass.parse(_sass("MOV R0, RZ", "EXIT"))))


def test_describe():
    text = sass.describe(sass.loops(sass.parse(TOY))[0])
    assert text.splitlines() == [
        "0x0020-0x00f0: 13 instrs, 7 own (ldg 1, stg 1, sts 1, bar 1, branch 2, sfu 1), 1 loops",
        "  0x0060-0x00b0: 6 instrs, 4 own (mma 1, lds 1, branch 2), 1 loops",
        "    0x0070-0x0080: 2 instrs, 2 own (lds 1, branch 1), 0 loops"]


@triton.jit
def _two_loop_kernel(x_ptr, y_ptr, T, K, BLOCK: tl.constexpr):
    # y[s, k] = 2 x[s, k] for s < T, k < K, in tiles of 16: a time loop holding a loop over K
    offs = tl.arange(0, BLOCK)
    for s in range(T):
        for k in range(0, K, 16):
            mask = k + offs < K
            x = tl.load(x_ptr + s * K + k + offs, mask=mask)
            tl.store(y_ptr + s * K + k + offs, x * 2, mask=mask)


def _compile_two_loop_kernel(path):
    """Compile _two_loop_kernel for sm_90 and write its cubin to `path`. Runs in a fresh process with
    TRITON_INTERPRET=0 (the suite's conftest.py turns the interpreter on before decoration)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    signature = {"x_ptr": "*fp32", "y_ptr": "*fp32", "T": "i32", "K": "i32", "BLOCK": "constexpr"}
    src = ASTSource(_two_loop_kernel, signature, {(4,): 16})
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32))
    with open(path, "wb") as f:
        f.write(compiled.asm["cubin"])


@pytest.fixture(scope="module")
def two_loop_cubin(tmp_path_factory):
    path = tmp_path_factory.mktemp("sass") / "kernel.cubin"
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import test_sass; "
            f"test_sass._compile_two_loop_kernel({str(path)!r})")
    env = dict(os.environ, TRITON_INTERPRET="0")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, timeout=600)
    return path.read_bytes()


def test_real_kernel_time_loop(two_loop_cubin):
    instrs = sass.parse(sass.disassemble(two_loop_cubin))
    outer = sass.outer_loop(sass.loops(instrs))
    assert len(outer.children) == 1, sass.describe(outer)
    inner = outer.children[0]
    assert not inner.children
    assert {"LDG", "STG"} <= {i.opcode.split(".")[0] for i in inner.own}, sass.describe(outer)
    once = sass.per_iteration(outer, lambda loop, depth: 1)
    thrice = sass.per_iteration(outer, lambda loop, depth: 3)
    assert thrice["total"] - once["total"] == 2 * len(inner.own) > 0
    for name in sass.CLASSES:
        assert thrice[name] - once[name] == 2 * sum(i.opcode.split(".")[0] in sass.CLASSES[name][0]
                                                    for i in inner.own)
