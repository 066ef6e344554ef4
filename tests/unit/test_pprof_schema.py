"""The generated pprof Profile class: the field numbers and types pprof readers rely on."""

from google.protobuf.descriptor import FieldDescriptor as FD

from ebpf_otlp.export.pprof_schema import Profile


def field(message, name):
    return message.DESCRIPTOR.fields_by_name[name]


def test_is_perftools_profile():
    assert Profile.DESCRIPTOR.full_name == "perftools.profiles.Profile"


def test_reader_fields_keep_their_numbers_and_types():
    default = field(Profile, "default_sample_type")
    assert (default.number, default.type) == (14, FD.TYPE_INT64)
    assert not default.is_repeated
    strings = field(Profile, "string_table")
    assert (strings.number, strings.type, strings.is_repeated) == (6, FD.TYPE_STRING, True)
    sample = field(Profile, "sample")
    assert (sample.number, sample.message_type.full_name) == (2, "perftools.profiles.Sample")
    assert sample.message_type.fields_by_name["location_id"].type == FD.TYPE_UINT64


def test_round_trip():
    p = Profile(string_table=["", "samples", "count", "main"], default_sample_type=1, period=7)
    p.sample_type.add(type=1, unit=2)
    p.function.add(id=1, name=3)
    p.location.add(id=1, address=0x1234).line.add(function_id=1)
    p.sample.add(location_id=[1], value=[5])
    back = Profile.FromString(p.SerializeToString())
    assert back == p
    assert back.string_table[back.default_sample_type] == "samples"
    assert back.sample[0].value == [5]
