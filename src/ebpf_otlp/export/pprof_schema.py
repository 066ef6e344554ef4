"""Google's pprof profile.proto (package perftools.profiles), built at import time.

The schema is declared here as field tables and turned into protobuf message
classes by the protobuf runtime, so no protoc step or generated file is needed
and the classes always match the installed protobuf.
"""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_INT64, _UINT64, _BOOL, _STRING, _MSG = (_F.TYPE_INT64, _F.TYPE_UINT64, _F.TYPE_BOOL,
                                        _F.TYPE_STRING, _F.TYPE_MESSAGE)
_REP = "repeated"

# message: [(field, number, type, message type or None, repeated?)]
SCHEMA = {
    "Profile": [
        ("sample_type", 1, _MSG, "ValueType", _REP), ("sample", 2, _MSG, "Sample", _REP),
        ("mapping", 3, _MSG, "Mapping", _REP), ("location", 4, _MSG, "Location", _REP),
        ("function", 5, _MSG, "Function", _REP), ("string_table", 6, _STRING, None, _REP),
        ("drop_frames", 7, _INT64, None, ""), ("keep_frames", 8, _INT64, None, ""),
        ("time_nanos", 9, _INT64, None, ""), ("duration_nanos", 10, _INT64, None, ""),
        ("period_type", 11, _MSG, "ValueType", ""), ("period", 12, _INT64, None, ""),
        ("comment", 13, _INT64, None, _REP), ("default_sample_type", 14, _INT64, None, ""),
        ("doc_url", 15, _INT64, None, ""),
    ],
    "ValueType": [("type", 1, _INT64, None, ""), ("unit", 2, _INT64, None, "")],
    "Sample": [
        ("location_id", 1, _UINT64, None, _REP), ("value", 2, _INT64, None, _REP),
        ("label", 3, _MSG, "Label", _REP),
    ],
    "Label": [
        ("key", 1, _INT64, None, ""), ("str", 2, _INT64, None, ""),
        ("num", 3, _INT64, None, ""), ("num_unit", 4, _INT64, None, ""),
    ],
    "Mapping": [
        ("id", 1, _UINT64, None, ""), ("memory_start", 2, _UINT64, None, ""),
        ("memory_limit", 3, _UINT64, None, ""), ("file_offset", 4, _UINT64, None, ""),
        ("filename", 5, _INT64, None, ""), ("build_id", 6, _INT64, None, ""),
        ("has_functions", 7, _BOOL, None, ""), ("has_filenames", 8, _BOOL, None, ""),
        ("has_line_numbers", 9, _BOOL, None, ""), ("has_inline_frames", 10, _BOOL, None, ""),
    ],
    "Location": [
        ("id", 1, _UINT64, None, ""), ("mapping_id", 2, _UINT64, None, ""),
        ("address", 3, _UINT64, None, ""), ("line", 4, _MSG, "Line", _REP),
        ("is_folded", 5, _BOOL, None, ""),
    ],
    "Line": [("function_id", 1, _UINT64, None, ""), ("line", 2, _INT64, None, ""),
             ("column", 3, _INT64, None, "")],
    "Function": [
        ("id", 1, _UINT64, None, ""), ("name", 2, _INT64, None, ""),
        ("system_name", 3, _INT64, None, ""), ("filename", 4, _INT64, None, ""),
        ("start_line", 5, _INT64, None, ""),
    ],
}
PACKAGE = "perftools.profiles"


def _build():
    fdp = descriptor_pb2.FileDescriptorProto(name="ebpf_otlp/pprof/profile.proto",
                                             package=PACKAGE, syntax="proto3")
    for msg_name, fields in SCHEMA.items():
        msg = fdp.message_type.add(name=msg_name)
        for name, number, ftype, type_name, label in fields:
            field = msg.field.add(name=name, number=number, type=ftype,
                                  label=_F.LABEL_REPEATED if label else _F.LABEL_OPTIONAL)
            if type_name:
                field.type_name = f".{PACKAGE}.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    file_desc = pool.FindFileByName(fdp.name)
    return {name: message_factory.GetMessageClass(file_desc.message_types_by_name[name])
            for name in SCHEMA}


_CLASSES = _build()
Profile = _CLASSES["Profile"]
