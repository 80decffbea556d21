"""TUCam, Tucsen's C camera API, over ctypes: its structures, prototypes, ids and return codes as
Tucsen's ``TUDefine.h`` and ``TUCamApi.h`` declare them (the Linux SDK with timeouts on
``Api_Init`` and ``Buf_WaitForFrame``), and the Dhyana models photonflow drives.

Why: ``load_tucam_library`` binds these prototypes to ``libTUCam.so.1``, and the simulated library
(``photonflow.simulators.tucsen_tucam``) builds C functions with the very same prototypes, so the
Tucsen camera calls both through ctypes alike. Nothing here imports Tango.
"""

from __future__ import annotations

import ctypes
from ctypes import POINTER, Structure, c_char, c_char_p, c_double, c_int32, c_uint8, c_uint16, c_uint32, c_void_p
from dataclasses import dataclass
from types import SimpleNamespace

from photonflow.errors import ConfigurationError


# -- TUDefine.h: the structures (field order and C types as the header has them) ------------------
class TUCAM_INIT(Structure):
    _fields_ = [("uiCamCount", c_uint32), ("pstrConfigPath", c_char_p)]


class TUCAM_OPEN(Structure):
    _fields_ = [("uiIdxOpen", c_uint32), ("hIdxTUCam", c_void_p)]


class TUCAM_VALUE_INFO(Structure):
    _fields_ = [("nID", c_int32), ("nValue", c_int32), ("pText", POINTER(c_char)), ("nTextSize", c_int32)]


class TUCAM_CAPA_ATTR(Structure):
    _fields_ = [("idCapa", c_int32), ("nValMin", c_int32), ("nValMax", c_int32), ("nValDft", c_int32),
                ("nValStep", c_int32)]


class TUCAM_PROP_ATTR(Structure):
    _fields_ = [("idProp", c_int32), ("nIdxChn", c_int32), ("dbValMin", c_double), ("dbValMax", c_double),
                ("dbValDft", c_double), ("dbValStep", c_double)]


class TUCAM_ROI_ATTR(Structure):
    _fields_ = [("bEnable", c_uint32), ("nHOffset", c_int32), ("nVOffset", c_int32), ("nWidth", c_int32),
                ("nHeight", c_int32)]


class TUCAM_TRIGGER_ATTR(Structure):
    _fields_ = [("nTgrMode", c_int32), ("nExpMode", c_int32), ("nEdgeMode", c_int32), ("nDelayTm", c_int32),
                ("nFrames", c_int32), ("nBufFrames", c_int32)]


class TUCAM_FRAME(Structure):
    _fields_ = [("szSignature", c_char * 8), ("usHeader", c_uint16), ("usOffset", c_uint16),
                ("usWidth", c_uint16), ("usHeight", c_uint16), ("uiWidthStep", c_uint32),
                ("ucDepth", c_uint8), ("ucFormat", c_uint8), ("ucChannels", c_uint8), ("ucElemBytes", c_uint8),
                ("ucFormatGet", c_uint8), ("uiIndex", c_uint32), ("uiImgSize", c_uint32), ("uiRsdSize", c_uint32),
                ("uiHstSize", c_uint32), ("pBuffer", POINTER(c_uint8))]


class TUCAM_REG_RW(Structure):
    _fields_ = [("nRegType", c_int32), ("pBuf", POINTER(c_char)), ("nBufSize", c_int32)]


HANDLE = c_void_p  # HDTUCAM: the opened camera, opaque
# TUCamApi.h: the functions photonflow calls; every one returns a TUCAMRET (unsigned 32 bits).
PROTOTYPES: dict[str, tuple] = {
    "TUCAM_Api_Init": (POINTER(TUCAM_INIT), c_int32),  # timeout, ms
    "TUCAM_Api_Uninit": (),
    "TUCAM_Dev_Open": (POINTER(TUCAM_OPEN),),
    "TUCAM_Dev_Close": (HANDLE,),
    "TUCAM_Dev_GetInfo": (HANDLE, POINTER(TUCAM_VALUE_INFO)),
    "TUCAM_Capa_GetAttr": (HANDLE, POINTER(TUCAM_CAPA_ATTR)),
    "TUCAM_Capa_GetValue": (HANDLE, c_int32, POINTER(c_int32)),
    "TUCAM_Capa_SetValue": (HANDLE, c_int32, c_int32),
    "TUCAM_Prop_GetAttr": (HANDLE, POINTER(TUCAM_PROP_ATTR)),
    "TUCAM_Prop_GetValue": (HANDLE, c_int32, POINTER(c_double), c_int32),  # channel
    "TUCAM_Prop_SetValue": (HANDLE, c_int32, c_double, c_int32),
    "TUCAM_Buf_Alloc": (HANDLE, POINTER(TUCAM_FRAME)),
    "TUCAM_Buf_Release": (HANDLE,),
    "TUCAM_Buf_AbortWait": (HANDLE,),
    "TUCAM_Buf_WaitForFrame": (HANDLE, POINTER(TUCAM_FRAME), c_int32),  # timeout, ms
    "TUCAM_Cap_SetROI": (HANDLE, TUCAM_ROI_ATTR),  # by value
    "TUCAM_Cap_GetROI": (HANDLE, POINTER(TUCAM_ROI_ATTR)),
    "TUCAM_Cap_SetTrigger": (HANDLE, TUCAM_TRIGGER_ATTR),  # by value
    "TUCAM_Cap_DoSoftwareTrigger": (HANDLE, c_uint32),
    "TUCAM_Cap_Start": (HANDLE, c_uint32),  # the trigger mode
    "TUCAM_Cap_Stop": (HANDLE,),
    "TUCAM_Reg_Read": (HANDLE, TUCAM_REG_RW),  # by value
}
TUCAMRET = c_uint32

# ids (TUCAM_IDINFO, TUCAM_IDCAPA, TUCAM_IDPROP) and modes
TUIDI_PRODUCT, TUIDI_VERSION_FRMW, TUIDI_CAMERA_MODEL = 0x03, 0x05, 0x09
TUIDC_BITOFDEPTH, TUIDC_FAN_GEAR, TUIDC_IMGMODESELECT = 0x02, 0x07, 0x16
TUIDP_GLOBALGAIN, TUIDP_EXPOSURETM, TUIDP_TEMPERATURE, TUIDP_FRAME_RATE = 0x00, 0x01, 0x04, 0x19
TUCCM_SEQUENCE, TUCCM_TRIGGER_STANDARD, TUCCM_TRIGGER_SYNCHRONOUS, TUCCM_TRIGGER_SOFTWARE = 0x00, 0x01, 0x02, 0x04
TUCTE_EXPTM, TUCTE_WIDTH = 0x00, 0x01  # exposure: the set time, or the trigger pulse's width
TUCTD_RISING = 0x01
TUFRM_FMT_USUAL = 0x11
TUREG_SN = 0x01
TUSN_SIZE = 64

# TUCAMRET codes: >= 0x80000000 is an error.
TUCAMRET_CODES = {
    0x00000001: "TUCAMRET_SUCCESS", 0x80000000: "TUCAMRET_FAILURE", 0x80000101: "TUCAMRET_NO_MEMORY",
    0x80000105: "TUCAMRET_NO_CAMERA", 0x80000110: "TUCAMRET_FAILOPEN_CAMERA", 0x80000201: "TUCAMRET_INIT",
    0x80000202: "TUCAMRET_BUSY", 0x80000203: "TUCAMRET_NOT_INIT", 0x80000206: "TUCAMRET_NOT_READY",
    0x80000207: "TUCAMRET_ABORT", 0x80000208: "TUCAMRET_TIMEOUT", 0x80000209: "TUCAMRET_LOSTFRAME",
    0x8000020B: "TUCAMRET_USB_STATUS_ERROR", 0x80000301: "TUCAMRET_INVALID_CAMERA",
    0x80000302: "TUCAMRET_INVALID_HANDLE", 0x80000304: "TUCAMRET_INVALID_IDPROP",
    0x80000305: "TUCAMRET_INVALID_IDCAPA", 0x80000306: "TUCAMRET_INVALID_IDPARAM", 0x80000307: "TUCAMRET_INVALID_PARAM",
    0x80000309: "TUCAMRET_INVALID_VALUE", 0x8000030C: "TUCAMRET_INVALID_SUBARRAY",
    0x80000311: "TUCAMRET_OUT_OF_RANGE", 0x80000312: "TUCAMRET_NOT_SUPPORT", 0x80000313: "TUCAMRET_NOT_WRITABLE",
    0x83001001: "TUCAMRET_FAIL_READ_CAMERA", 0x83001002: "TUCAMRET_FAIL_WRITE_CAMERA",
}
CODE = {name: code for code, name in TUCAMRET_CODES.items()}


@dataclass(frozen=True)
class DhyanaModel:
    """What the driver must know of a model; ``TUIDI_CAMERA_MODEL`` names it."""

    name: str
    product_id: int
    width: int
    height: int
    pixel_size: float  # metres
    # photonflow's gain mode -> (TUIDC_IMGMODESELECT, TUIDP_GLOBALGAIN), as Tucsen's drivers set them
    gain_modes: dict[str, tuple[int, int]]
    max_frame_rate: float  # full frame, HDR


MODELS = {
    "dhyana95": DhyanaModel("Dhyana 95 V2", 0xE40F, 2048, 2048, 11e-6,
                            {"HDR": (0, 0), "High": (0, 1), "Low": (0, 2)}, 24.0),
    "dhyana400bsi": DhyanaModel("Dhyana 400BSI V3", 0xE419, 2048, 2048, 6.5e-6,
                                {"HDR": (2, 0), "HighSpeed": (3, 1), "CMS": (1, 0)}, 43.0),
}
FAN_GEARS = {"high": 0, "medium": 1, "low": 2, "off": 3}  # TUIDC_FAN_GEAR; off: water cooling
TEMPERATURE_ZERO = 50.0  # TUIDP_TEMPERATURE takes (T + 50) x scale, scale 10 when its maximum is above 100


def mangled_name(name: str, argtypes: tuple) -> str:
    """The C++ (Itanium) name of a TUCam function: the Linux library exports only those."""
    def code(kind) -> str:
        if kind is HANDLE:
            return "P9_tagTUCAM"
        simple = {c_int32: "i", c_uint32: "j", c_double: "d"}
        if kind in simple:
            return simple[kind]
        if hasattr(kind, "_type_") and not isinstance(kind._type_, str):  # a POINTER(...)
            return "P" + code(kind._type_)
        tag = "_tag" + kind.__name__
        return f"{len(tag)}{tag}"

    parameters = "".join(code(kind) for kind in argtypes) or "v"
    return f"_Z{len(name)}{name}{parameters}"


def load_tucam_library(path: str = "libTUCam.so.1") -> SimpleNamespace:
    """Tucsen's libTUCam with every prototype declared (needs the library and the camera's driver)."""
    try:
        library = ctypes.CDLL(path)
    except OSError as error:
        raise ConfigurationError(f"cannot load the TUCam library {path!r} ({error}); install Tucsen's SDK "
                                 "or set Simulation to dhyana95 or dhyana400bsi") from None
    functions = {}
    for name, argtypes in PROTOTYPES.items():
        function = getattr(library, name, None) or getattr(library, mangled_name(name, argtypes))
        function.argtypes, function.restype = argtypes, TUCAMRET
        functions[name] = function
    return SimpleNamespace(**functions)
