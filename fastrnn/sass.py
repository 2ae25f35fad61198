"""Count the warp-instructions one step of a kernel's time loop issues, from its SASS.

This is the static side of the performance evidence: an SM has 4 warp schedulers that each issue
at most one instruction per cycle, so a step that issues N instructions per warp over W warps takes
at least N * W / 4 cycles, i.e. N * W / 4 / 1.755 GHz on an H100 (the "issue bound").

    instrs = parse(disassemble(compiled.asm["cubin"]))
    step = outer_loop(loops(instrs))
    counts = per_iteration(step, lambda loop, depth: n_tiles)  # counts["total"] = N

What is counted, and what is not:
- Every instruction in a loop's address range counts once per iteration, whether or not its
  predicate is true or a forward branch skips it (both sides of an `if` count): for branchy code
  the count is an upper bound.
- `trips` counts iterations of the SASS loop, not of the source loop: LLVM and ptxas unroll a
  loop with a runtime trip count (often by 4) and put the remainder in straight code after it, which
  is then part of the parent's own instructions.
- The compiler may version a loop (a second copy for a case it can simplify, e.g. an inner loop
  that never runs); the copies are separate top-level loops, see `outer_loop`.
"""
import os
import re
import subprocess
import tempfile
from collections import Counter, namedtuple
from dataclasses import dataclass, field

# class -> (base opcodes, the part before the first ".", and why the class matters)
CLASSES = {
    "mma": ({"HMMA", "HGMMA", "IMMA", "IGMMA", "DMMA", "QGMMA"},
            "tensor-core matrix multiply-accumulate: the useful work of a GEMM step"),
    "ldg": ({"LDG", "LDGSTS", "UTMALDG"},
            "global reads (plain, cp.async, TMA): hundreds of cycles of latency to hide"),
    "stg": ({"STG", "UTMASTG"}, "global writes: what a step sends to HBM or L2"),
    "lds": ({"LDS", "LDSM"}, "shared-memory reads: shared bandwidth and bank conflicts"),
    "sts": ({"STS", "STSM"}, "shared-memory writes: shared bandwidth and bank conflicts"),
    "atom": ({"ATOM", "ATOMG", "ATOMS", "RED", "REDG"},
             "atomics: serialize on one address, as a cross-CTA step signal does"),
    "membar": ({"MEMBAR", "FENCE", "CCTL"},
               "memory fences and cache control: wait for every earlier memory operation"),
    "bar": ({"BAR"}, "CTA barriers: every warp waits for the slowest"),
    "branch": ({"BRA", "BRX", "JMP", "JMX", "CALL", "RET", "EXIT", "BREAK", "BSSY", "BSYNC", "WARPSYNC"},
               "control flow and divergence bookkeeping: issue slots that do no arithmetic"),
    "sfu": ({"MUFU"}, "special-function unit (exp, rcp, tanh): a quarter of the FMA rate"),
}
_CLASS_OF = {op: name for name, (ops, _) in CLASSES.items() for op in ops}

Instr = namedtuple("Instr", "offset opcode text target")
Instr.__doc__ = """One SASS instruction: byte `offset`, `opcode` with its modifiers ("HMMA.16816.F32.BF16"),
the whole `text` (predicate and operands), and the branch `target` offset of BRA/JMP, else None."""

_LINE = re.compile(r"^\s*/\*([0-9a-fA-F]+)\*/\s+([^;]*?)\s*;")  # /*0120*/  @P0 BRA 0x120 ;
_LABEL = re.compile(r"^\s*(\.L\w+):")  # nvdisasm names branch targets .L_x_4
_OPCODE = re.compile(r"^(?:@!?U?P(?:T|\d+)\s+)?(\S+)")
_TARGET = re.compile(r"`\((\.L\w+)\)|(0x[0-9a-fA-F]+)\s*$")
_DIRECT = {"BRA", "JMP"}  # BRX and JMX jump to a register, CALL leaves the function


def disassemble(cubin: bytes) -> str:
    """SASS text of a cubin, from the Triton wheel's `cuobjdump -sass`."""
    from .inspection import cuobjdump  # lazily: fastrnn.inspection imports torch
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        return subprocess.run([cuobjdump(), "-sass", path], check=True, capture_output=True, text=True).stdout


def parse(sass_text):
    """The instructions of the one function in `sass_text` (cuobjdump -sass or nvdisasm output),
    without NOPs and the unpredicated `BRA` to itself that follows a function's last EXIT.
    Raises ValueError when the text holds no function or more than one."""
    rows, labels, pending = [], {}, []
    for line in sass_text.splitlines():
        label = _LABEL.match(line)
        if label:
            pending.append(label.group(1))  # names the next instruction
            continue
        m = _LINE.match(line)
        if not m or m.group(2).startswith("."):  # nvdisasm's data sections: /*0000*/ .byte ...
            continue
        offset = int(m.group(1), 16)
        if rows and offset <= rows[-1][0]:
            raise ValueError("the SASS text holds more than one function; pass the text of one")
        labels.update(dict.fromkeys(pending, offset))
        pending.clear()
        rows.append((offset, m.group(2)))
    if not rows:
        raise ValueError("no SASS instructions in the text")
    instrs = []
    for offset, text in rows:
        opcode = _OPCODE.match(text).group(1)
        target = _TARGET.search(text) if opcode.split(".")[0] in _DIRECT else None
        if target:
            target = labels.get(target.group(1)) if target.group(1) else int(target.group(2), 16)
        if opcode == "NOP" or (target == offset and not text.startswith("@")):
            continue
        instrs.append(Instr(offset, opcode, text, target))
    return instrs


@dataclass
class Loop:
    """A loop of the SASS: the instructions from `start` (a backward branch's target) to `end` (the
    last backward branch to it), both offsets inclusive. `children` are the loops directly inside it,
    `own` its instructions outside them."""
    start: int
    end: int
    children: list = field(default_factory=list)
    own: list = field(default_factory=list)

    @property
    def size(self):
        """Instructions in the range, its children's included (the static size, not weighted by trips)."""
        return len(self.own) + sum(child.size for child in self.children)


def loops(instrs):
    """The top-level loops of `instrs` (from `parse`) in address order, each holding its nested loops.

    A loop is the range from a backward branch's target to that branch; several backward branches
    to one target are one loop that ends at the last of them. Loops nest by containment (a loop
    ending at the same offset as a longer one is inside it). Two ranges that cross (each holds one
    end of the other) are merged into one loop over their union: neither runs a whole number of
    times per iteration of the other, so only the union has an iteration to count."""
    ends = {}
    for i in instrs:
        if i.target is not None and i.target <= i.offset:
            ends[i.target] = max(ends.get(i.target, i.offset), i.offset)
    spans = _merge_crossing(sorted(ends.items()))
    roots, open_ = [], []
    for start, end in sorted(spans, key=lambda s: (s[0], -s[1])):
        while open_ and open_[-1].end < start:
            open_.pop()
        loop = Loop(start, end)
        (open_[-1].children if open_ else roots).append(loop)
        open_.append(loop)
    for i in instrs:
        level, innermost = roots, None
        while True:
            inner = next((loop for loop in level if loop.start <= i.offset <= loop.end), None)
            if inner is None:
                break
            level, innermost = inner.children, inner
        if innermost is not None:
            innermost.own.append(i)
    return roots


def _merge_crossing(spans):
    """Sorted (start, end) spans with every crossing pair replaced by its union, until none cross."""
    spans = sorted(spans)
    while True:
        pair = next(((a, b) for k, a in enumerate(spans) for b in spans[k + 1:] if b[0] <= a[1] < b[1]), None)
        if pair is None:
            return spans
        a, b = pair
        spans = sorted([s for s in spans if s not in pair] + [(a[0], b[1])])


def _count(instrs):
    counts = Counter(total=len(instrs))
    bases = (i.opcode.split(".")[0] for i in instrs)
    counts.update(_CLASS_OF[base] for base in bases if base in _CLASS_OF)
    return counts


def per_iteration(loop, trips):
    """Counter of class -> warp-instructions ONE iteration of `loop` issues: its own instructions plus,
    for each nested loop, `trips(child, depth)` times one iteration of that loop (depth 1 = a direct
    child of `loop`). The classes are "total" (every instruction) and those of CLASSES."""
    def walk(node, depth):
        counts = _count(node.own)
        for child in node.children:
            n = trips(child, depth)
            for name, v in walk(child, depth + 1).items():
                counts[name] += n * v
        return counts
    return walk(loop, 1)


def outer_loop(top_level):
    """The time loop among the top-level loops (from `loops`): the one with the most instructions in
    its range, nested loops included (the first of equals in address order). The step loop holds the
    cell; the smaller top-level loops are prologues (say zeroing a buffer) or a versioned copy of
    the step loop for a case the compiler could simplify. Raises ValueError if there is no loop."""
    if not top_level:
        raise ValueError("the kernel has no loop")
    return max(top_level, key=lambda loop: loop.size)


def describe(loop):
    """One line per loop of the tree under `loop`, indented by depth: its range, size, own
    instructions and the non-zero classes among them, e.g.
    `0x0110-0x0800: 112 instrs, 57 own (ldg 3, stg 3, branch 10), 1 loops`."""
    def lines(node, depth):
        own = _count(node.own)
        classes = ", ".join(f"{name} {own[name]}" for name in CLASSES if own[name])
        yield (f"{'  ' * depth}0x{node.start:04x}-0x{node.end:04x}: {node.size} instrs, {len(node.own)} own"
               f"{f' ({classes})' if classes else ''}, {len(node.children)} loops")
        for child in node.children:
            yield from lines(child, depth + 1)
    return "\n".join(lines(loop, 0))
