//! Tests of the value mapping with text forms as Postgres writes them.

use super::datetime::{civil_from_days, days_from_civil};
use super::*;
use proptest::prelude::*;
use serde_json::json;

fn j(oid: u32, text: &str) -> Value {
    to_json(oid, text.as_bytes())
}

#[test]
fn booleans_are_json_booleans() {
    assert_eq!(j(16, "t"), json!(true));
    assert_eq!(j(16, "f"), json!(false));
    assert_eq!(j(16, "maybe"), json!("maybe"));
}

#[test]
fn integers_are_json_integers_within_their_width() {
    assert_eq!(j(21, "-32768"), json!(-32768));
    assert_eq!(j(21, "32768"), json!("32768"));
    assert_eq!(j(23, "2147483647"), json!(2_147_483_647));
    assert_eq!(j(23, "-17"), json!(-17));
    assert_eq!(j(20, "-9223372036854775808"), json!(i64::MIN));
    assert_eq!(j(20, "9223372036854775807"), json!(i64::MAX));
    assert_eq!(j(26, "4294967295"), json!(4_294_967_295_u32));
    assert_eq!(j(26, "-1"), json!("-1"));
    assert_eq!(j(23, "12abc"), json!("12abc"));
}

#[test]
fn floats_are_numbers_and_non_finite_values_strings() {
    assert_eq!(j(701, "2.71875"), json!(2.71875));
    assert_eq!(j(701, "-0.5"), json!(-0.5));
    assert_eq!(j(701, "1e+100"), json!(1e100));
    assert_eq!(j(700, "1.5e-05"), json!(1.5e-5));
    assert_eq!(j(700, "0.1"), json!(0.1));
    for special in ["NaN", "Infinity", "-Infinity"] {
        assert_eq!(j(700, special), json!(special));
        assert_eq!(j(701, special), json!(special));
    }
    assert_eq!(j(701, "inf"), json!("inf"));
}

#[test]
fn numeric_money_and_interval_are_strings_as_written() {
    assert_eq!(j(1700, "-12345.6789"), json!("-12345.6789"));
    assert_eq!(j(1700, "NaN"), json!("NaN"));
    assert_eq!(j(790, "$1,234.50"), json!("$1,234.50"));
    assert_eq!(
        j(1186, "1 year 2 mons 3 days 04:05:06"),
        json!("1 year 2 mons 3 days 04:05:06")
    );
}

#[test]
fn text_like_types_are_strings() {
    for (oid, text) in [
        (25, "héllo"),
        (1043, "varchar"),
        (1042, "padded    "),
        (19, "pg_catalog"),
        (18, "x"),
        (2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        (869, "192.168.0.1/24"),
        (650, "10.0.0.0/8"),
        (829, "08:00:2b:01:02:03"),
        (142, "<a>b</a>"),
    ] {
        assert_eq!(j(oid, text), json!(text), "oid {oid}");
    }
}

#[test]
fn json_documents_stay_strings() {
    assert_eq!(j(114, r#"{"a": 1}"#), json!(r#"{"a": 1}"#));
    assert_eq!(j(3802, r#"{"a": [1, null]}"#), json!(r#"{"a": [1, null]}"#));
}

#[test]
fn bytea_hex_becomes_padded_base64() {
    assert_eq!(j(17, "\\x"), json!(""));
    assert_eq!(j(17, "\\x00ff10"), json!("AP8Q"));
    assert_eq!(j(17, "\\xDEADbeef01"), json!("3q2+7wE="));
    assert_eq!(j(17, "\\x0"), json!("\\x0"));
    assert_eq!(j(17, "\\xzz"), json!("\\xzz"));
    // The escape output format is left as written.
    assert_eq!(j(17, "abc\\000"), json!("abc\\000"));
}

#[test]
fn dates_are_days_since_the_epoch() {
    assert_eq!(j(1082, "1970-01-01"), json!(0));
    assert_eq!(j(1082, "1969-12-31"), json!(-1));
    assert_eq!(j(1082, "2000-03-01"), json!(11_017));
    assert_eq!(j(1082, "2026-12-06"), json!(20_793));
    assert_eq!(j(1082, "2024-02-29"), json!(19_782));
    assert_eq!(j(1082, "2023-02-29"), json!("2023-02-29"));
    assert_eq!(j(1082, "1900-02-29"), json!("1900-02-29"));
    assert_eq!(j(1082, "0001-01-01"), json!(-719_162));
    assert_eq!(j(1082, "0001-12-31 BC"), json!(-719_163));
    assert_eq!(j(1082, "10000-01-01"), json!(2_932_897));
    assert_eq!(j(1082, "infinity"), json!("infinity"));
    assert_eq!(j(1082, "-infinity"), json!("-infinity"));
    assert_eq!(j(1082, "12/06/2026"), json!("12/06/2026"));
}

#[test]
fn times_are_microseconds_since_midnight() {
    assert_eq!(j(1083, "00:00:00"), json!(0));
    assert_eq!(j(1083, "08:30:00.123456"), json!(30_600_123_456_i64));
    assert_eq!(j(1083, "23:59:59.5"), json!(86_399_500_000_i64));
    assert_eq!(j(1083, "24:00:00"), json!(86_400_000_000_i64));
    assert_eq!(j(1083, "24:00:01"), json!("24:00:01"));
    assert_eq!(j(1083, "12:60:00"), json!("12:60:00"));
    assert_eq!(j(1083, "08:30:00.1234567"), json!("08:30:00.1234567"));
}

#[test]
fn timestamps_are_microseconds_since_the_epoch() {
    assert_eq!(j(1114, "1970-01-01 00:00:00"), json!(0));
    assert_eq!(
        j(1114, "2026-12-06 08:30:00.123456"),
        json!(1_796_545_800_123_456_i64)
    );
    assert_eq!(j(1114, "1969-12-31 23:59:59.999999"), json!(-1));
    assert_eq!(
        j(1114, "2000-01-01 00:00:00.5"),
        json!(946_684_800_500_000_i64)
    );
    assert_eq!(j(1114, "infinity"), json!("infinity"));
    assert_eq!(j(1114, "-infinity"), json!("-infinity"));
    assert_eq!(
        j(1114, "0044-03-15 12:00:00 BC"),
        json!("0044-03-15 12:00:00 BC")
    );
}

#[test]
fn zoned_timestamps_are_iso_strings_in_utc() {
    assert_eq!(
        j(1184, "2026-12-06 08:30:00.123456+00"),
        json!("2026-12-06T08:30:00.123456Z")
    );
    assert_eq!(
        j(1184, "2026-12-06 08:30:00+05:30"),
        json!("2026-12-06T03:00:00Z")
    );
    assert_eq!(
        j(1184, "2026-12-31 22:00:00.5-03"),
        json!("2027-01-01T01:00:00.5Z")
    );
    assert_eq!(
        j(1184, "2024-03-01 01:00:00+02"),
        json!("2024-02-29T23:00:00Z")
    );
    assert_eq!(
        j(1184, "1850-01-01 00:00:00+00:53:28"),
        json!("1849-12-31T23:06:32Z")
    );
    assert_eq!(j(1184, "infinity"), json!("infinity"));
    assert_eq!(
        j(1184, "0044-03-15 12:00:00+00 BC"),
        json!("0044-03-15 12:00:00+00 BC")
    );
    // DateStyle Postgres or SQL: left as written.
    assert_eq!(
        j(1184, "Sun Dec 06 08:30:00 2026 UTC"),
        json!("Sun Dec 06 08:30:00 2026 UTC")
    );
    assert_eq!(j(1184, "2026-12-06 08:30:00"), json!("2026-12-06 08:30:00"));
}

#[test]
fn zoned_times_are_iso_times_in_utc() {
    assert_eq!(j(1266, "08:30:00+02"), json!("06:30:00Z"));
    assert_eq!(j(1266, "01:15:30.25+05:30"), json!("19:45:30.25Z"));
    assert_eq!(j(1266, "23:00:00-03"), json!("02:00:00Z"));
    assert_eq!(j(1266, "08:30:00"), json!("08:30:00"));
}

#[test]
fn arrays_of_scalars_are_json_arrays() {
    assert_eq!(j(1007, "{1,2,NULL}"), json!([1, 2, null]));
    assert_eq!(j(1007, "{}"), json!([]));
    assert_eq!(j(1016, "{-9223372036854775808}"), json!([i64::MIN]));
    assert_eq!(j(1000, "{t,f,NULL}"), json!([true, false, null]));
    assert_eq!(
        j(1022, "{1.5,NaN,-Infinity}"),
        json!([1.5, "NaN", "-Infinity"])
    );
    assert_eq!(j(1231, "{1.10,-2}"), json!(["1.10", "-2"]));
    assert_eq!(
        j(1009, r#"{"a b","c\"d",plain,"NULL","",NULL,"back\\slash"}"#),
        json!(["a b", "c\"d", "plain", "NULL", "", null, "back\\slash"])
    );
    assert_eq!(
        j(2951, "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"),
        json!(["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"])
    );
    assert_eq!(
        j(3807, r#"{"{\"a\": 1}","[1, 2]"}"#),
        json!([r#"{"a": 1}"#, "[1, 2]"])
    );
    assert_eq!(j(1015, "{ x , y }"), json!(["x", "y"]));
}

#[test]
fn multi_dimensional_arrays_nest() {
    assert_eq!(j(1007, "{{1,2},{3,NULL}}"), json!([[1, 2], [3, null]]));
    assert_eq!(j(1009, "{{{a}}}"), json!([[["a"]]]));
    let seven = "{{{{{{{1}}}}}}}";
    assert_eq!(j(1007, seven), json!(seven));
}

#[test]
fn malformed_arrays_stay_strings() {
    for text in [
        "{1,2",
        "1,2}",
        "{1,,2}",
        "{\"a}",
        "[0:1]={1,2}",
        "{1}x",
        "",
        "{a\"b}",
    ] {
        assert_eq!(j(1007, text), json!(text), "{text:?}");
    }
}

#[test]
fn unknown_types_and_invalid_utf8_become_strings() {
    assert_eq!(j(600, "(1,2)"), json!("(1,2)"));
    assert_eq!(to_json(25, b"a\xffb"), json!("a\u{fffd}b"));
    assert_eq!(to_json(23, b"\xff"), json!("\u{fffd}"));
}

#[test]
fn type_names_come_from_pg_type() {
    assert_eq!(type_name(23), Some("int4"));
    assert_eq!(type_name(1184), Some("timestamptz"));
    assert_eq!(type_name(3807), Some("_jsonb"));
    assert_eq!(type_name(600), None);
}

#[test]
fn civil_dates_round_trip_through_days() {
    for days in (-800_000..800_000).step_by(97) {
        let (y, m, d) = civil_from_days(days);
        assert_eq!(days_from_civil(y, m, d), days);
    }
    assert_eq!(days_from_civil(2000, 2, 29), 11_016);
    assert_eq!(civil_from_days(-1), (1969, 12, 31));
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(
        oid in prop::sample::select(TYPES.iter().map(|(oid, _)| *oid).collect::<Vec<_>>()),
        text in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let _ = to_json(oid, &text);
    }

    #[test]
    fn timestamps_written_as_postgres_does_read_back(us in -62_135_596_800_000_000_i64..253_402_300_799_999_999) {
        let (y, m, d) = civil_from_days(us.div_euclid(86_400_000_000));
        let tod = us.rem_euclid(86_400_000_000);
        let (s, f) = (tod / 1_000_000, tod % 1_000_000);
        let text = format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{f:06}", s / 3600, s / 60 % 60, s % 60);
        prop_assert_eq!(j(1114, &text), json!(us));
    }
}

#[test]
fn time_and_timestamp_of_precision_up_to_3_are_in_milliseconds() {
    use super::to_json_typed;
    // timestamp(3), time(0): Debezium's Timestamp and Time (milliseconds).
    assert_eq!(
        to_json_typed(1114, 3, b"2026-12-06 08:30:00.123"),
        json!(1_796_545_800_123_i64)
    );
    assert_eq!(to_json_typed(1083, 0, b"13:14:15"), json!(47_655_000));
    // No precision, or 4 to 6: microseconds.
    assert_eq!(to_json_typed(1083, -1, b"00:00:01"), json!(1_000_000));
    assert_eq!(to_json_typed(1083, 6, b"00:00:01"), json!(1_000_000));
    // Other types are as to_json writes them.
    assert_eq!(to_json_typed(23, 3, b"42"), json!(42));
    assert_eq!(to_json_typed(1114, 3, b"infinity"), json!("infinity"));
}
