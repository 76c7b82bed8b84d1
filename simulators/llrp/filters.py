"""Select filters (C1G2Filter) as Gen2 Select commands on the SL flag.

Each filter's action says what a matching and a non-matching tag do (assert, deassert, negate,
nothing); a state-unaware inventory then reads the tags whose SL is asserted. Only the EPC memory
bank is modelled (CRC word, PC word, then the EPC); a filter on another bank is refused rather
than ignored. The default action, without C1G2TagInventoryStateUnawareFilterAction, is 0. A query
takes at most ``MAX_SELECT_FILTERS`` filters, as the capabilities advertise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from gateway.llrp import codec as c
from simulators.llrp.capabilities import MAX_SELECT_FILTERS
from simulators.llrp.refusals import param_error
from simulators.llrp.source import SimRead

_SL_ACTIONS: Final[Mapping[int, tuple[str, str]]] = {
    0: ("assert", "deassert"),
    1: ("assert", "nothing"),
    2: ("nothing", "deassert"),
    3: ("negate", "nothing"),
    4: ("deassert", "assert"),
    5: ("deassert", "nothing"),
    6: ("nothing", "assert"),
    7: ("nothing", "negate"),
}
_STATE_UNAWARE_ACTION = 334
_EPC_BANK = 1


def _filter_action(flt: c.C1G2Filter) -> int:
    for ext in flt.extensions:
        if isinstance(ext, c.RawParameter) and ext.type == _STATE_UNAWARE_ACTION and ext.body:
            return ext.body[0]
    return 0


def check_filters(filters: Sequence[c.C1G2Filter]) -> None:
    """Refuse (:class:`~simulators.llrp.refusals.RequestRefused`) filters this reader cannot
    apply as asked: too many, on a bank other than EPC, or with an unknown action."""
    if len(filters) > MAX_SELECT_FILTERS:
        raise param_error(
            c.C1G2Filter.TYPE,
            f"{len(filters)} select filters, at most {MAX_SELECT_FILTERS} per query",
            c.StatusCode.P_OVERFLOW_PARAMETER,
        )
    for flt in filters:
        if flt.mask.memory_bank != _EPC_BANK:
            raise param_error(
                c.C1G2TagInventoryMask.TYPE,
                f"select filters on memory bank {flt.mask.memory_bank} are not supported "
                "(EPC bank only)",
                c.StatusCode.P_UNSUPPORTED_PARAMETER,
            )
        if _filter_action(flt) not in _SL_ACTIONS:
            raise param_error(_STATE_UNAWARE_ACTION, f"filter action {_filter_action(flt)}")


def select_filters(ai: c.AISpec) -> dict[int, tuple[c.C1G2Filter, ...]]:
    """Antenna -> the select filters of its inventory commands (antenna 0: every antenna)."""
    out: dict[int, tuple[c.C1G2Filter, ...]] = {}
    for ips in ai.inventory_parameter_specs:
        for ac in ips.antenna_configurations:
            filters = tuple(f for cmd in ac.inventory_commands for f in cmd.filters)
            if filters:
                out[ac.antenna_id] = out.get(ac.antenna_id, ()) + filters
    return out


def _mask_matches(epc: bytes, mask: c.C1G2TagInventoryMask) -> bool:
    pc = (len(epc) // 2) << 11
    bank = int.from_bytes(b"\x00\x00" + pc.to_bytes(2, "big") + epc, "big")
    bank_bits = 32 + 8 * len(epc)
    if mask.pointer + mask.mask_bits > bank_bits:
        return False  # the mask runs past the end of the bank: no match (Gen2)
    got = (bank >> (bank_bits - mask.pointer - mask.mask_bits)) & ((1 << mask.mask_bits) - 1)
    want = int.from_bytes(mask.mask, "big") >> (8 * len(mask.mask) - mask.mask_bits)
    return got == want


def selected(read: SimRead, selects: Mapping[int, tuple[c.C1G2Filter, ...]]) -> bool:
    """Whether the Select commands of ``read``'s antenna leave its tag's SL asserted."""
    filters = selects.get(read.antenna, ()) + selects.get(0, ())
    if not filters:
        return True
    epc = read.epc_bytes
    sl = False
    for flt in filters:
        action = _SL_ACTIONS[_filter_action(flt)][0 if _mask_matches(epc, flt.mask) else 1]
        if action == "assert":
            sl = True
        elif action == "deassert":
            sl = False
        elif action == "negate":
            sl = not sl
    return sl
