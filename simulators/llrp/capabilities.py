"""What the simulated reader is and says it can do: GET_READER_CAPABILITIES_RESPONSE.

An Impinj-style UHF reader (FCC part 15 regulatory tables) with the antennas it was built with,
``GPIO_PORTS`` inputs and outputs and at most ``max_rospecs`` ROSpecs. The rest of the simulator
holds clients to these same limits (GPIO ports, ROSpecs, two select filters per query, no
AccessSpecs). Faults: ``omit`` leaves sections out (sllurp cannot connect without
``regulatory``); ``override`` replaces the whole response.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence

from gateway.llrp import codec as c

IMPINJ_PEN = c.VENDOR_IMPINJ
GPIO_PORTS = 4
MAX_SELECT_FILTERS = 2  # C1G2LLRPCapabilities.MaxNumSelectFiltersPerQuery
CAPABILITY_SECTIONS = frozenset({"general", "llrp", "regulatory", "air_protocol"})
_SIM_MODEL = 1
_SIM_FIRMWARE = "dockwatch-sim 1.0"


def capabilities_response(
    msg_id: int,
    requested: int,
    *,
    antennas: Sequence[int],
    max_rospecs: int,
    omit: Collection[str] = (),
    override: c.GetReaderCapabilitiesResponse | None = None,
) -> c.GetReaderCapabilitiesResponse:
    """The answer to GET_READER_CAPABILITIES with RequestedData ``requested`` (0 = all)."""
    if override is not None:
        return dataclasses.replace(override, msg_id=msg_id)

    def want(section: str, code: int) -> bool:
        return section not in omit and requested in (0, code)

    return c.GetReaderCapabilitiesResponse(
        msg_id=msg_id,
        general=_general_capabilities(antennas)
        if want("general", c.CapabilitiesRequest.GENERAL_DEVICE)
        else None,
        llrp=_llrp_capabilities(max_rospecs) if want("llrp", c.CapabilitiesRequest.LLRP) else None,
        regulatory=_regulatory_capabilities()
        if want("regulatory", c.CapabilitiesRequest.REGULATORY)
        else None,
        air_protocol=c.C1G2LLRPCapabilities(max_select_filters_per_query=MAX_SELECT_FILTERS)
        if want("air_protocol", c.CapabilitiesRequest.AIR_PROTOCOL)
        else None,
    )


def _general_capabilities(antennas: Sequence[int]) -> c.GeneralDeviceCapabilities:
    return c.GeneralDeviceCapabilities(
        max_antennas=max(antennas),
        can_set_antenna_properties=False,
        has_utc_clock=True,
        manufacturer=IMPINJ_PEN,
        model=_SIM_MODEL,
        firmware_version=_SIM_FIRMWARE,
        # receive sensitivity in dB relative to maximum, as Impinj readers list it
        receive_sensitivities=tuple(
            c.ReceiveSensitivityTableEntry(i + 1, v) for i, v in enumerate((0, 10, 20, 30))
        ),
        gpio=c.GPIOCapabilities(GPIO_PORTS, GPIO_PORTS),
        air_protocols=tuple(c.PerAntennaAirProtocol(a, (1,)) for a in antennas),
    )


def _llrp_capabilities(max_rospecs: int) -> c.LLRPCapabilities:
    return c.LLRPCapabilities(
        can_do_tag_inventory_state_aware_singulation=True,
        max_priority_levels=1,
        max_rospecs=max_rospecs,
        max_specs_per_rospec=8,
        max_inventory_parameter_specs_per_aispec=1,
        max_accessspecs=0,
        max_opspecs_per_accessspec=0,
    )


def _regulatory_capabilities() -> c.RegulatoryCapabilities:
    # FCC part 15: 50 channels 902.75..927.25 MHz; power 10.00..30.00 dBm in 0.25 dB steps
    channels = tuple(902_750 + 500 * i for i in range(50))
    powers = tuple(c.TransmitPowerLevelTableEntry(i + 1, 1000 + 25 * i) for i in range(81))
    modes = (
        c.C1G2UHFRFModeTableEntry(
            mode_identifier=0, m=0, bdr=640_000, pie=1500, min_tari=6250, max_tari=6250
        ),
        c.C1G2UHFRFModeTableEntry(
            mode_identifier=1, m=1, bdr=640_000, pie=1500, min_tari=6250, max_tari=6250
        ),
        c.C1G2UHFRFModeTableEntry(
            mode_identifier=2, m=2, bdr=274_000, pie=2000, min_tari=20000, max_tari=20000
        ),
        c.C1G2UHFRFModeTableEntry(
            mode_identifier=3, m=3, bdr=170_600, pie=2000, min_tari=20000, max_tari=20000
        ),
    )
    return c.RegulatoryCapabilities(
        country_code=840,
        communications_standard=1,
        uhf_band=c.UHFBandCapabilities(
            power_levels=powers,
            frequency_information=c.FrequencyInformation(
                hopping=True, hop_tables=(c.FrequencyHopTable(1, channels),)
            ),
            mode_tables=(c.C1G2UHFRFModeTable(modes),),
        ),
    )
