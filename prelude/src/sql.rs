//! SQL scalar functions: [`sql_function!`](crate::sql_function) exports a plain Rust fn so that the
//! gateway's SQL engine can call it on a batch of rows (the wire format is in `sandbox/ABI.md`).

/// A type a SQL function takes or returns, and how it travels: 8 little-endian bytes.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a SQL type",
    note = "functions declared with `sql_function!` take and return `f64`, `i64` and `bool`"
)]
pub trait SqlType: Copy {
    /// Its type byte on the wire: 0 = f64, 1 = i64, 2 = bool.
    const CODE: u8;
    /// Its name in the export name.
    const NAME: &'static str;
    /// Reads a value from its 8 bytes.
    fn from_bits(bits: u64) -> Self;
    /// Writes a value as 8 bytes.
    fn to_bits(self) -> u64;
}

impl SqlType for f64 {
    const CODE: u8 = 0;
    const NAME: &'static str = "f64";
    fn from_bits(bits: u64) -> Self {
        f64::from_bits(bits)
    }
    fn to_bits(self) -> u64 {
        f64::to_bits(self)
    }
}

impl SqlType for i64 {
    const CODE: u8 = 1;
    const NAME: &'static str = "i64";
    fn from_bits(bits: u64) -> Self {
        bits as i64
    }
    fn to_bits(self) -> u64 {
        self as u64
    }
}

impl SqlType for bool {
    const CODE: u8 = 2;
    const NAME: &'static str = "bool";
    fn from_bits(bits: u64) -> Self {
        bits != 0
    }
    fn to_bits(self) -> u64 {
        u64::from(self)
    }
}

/// Whether `name` is how `T` is spelled in an export name (refuses aliases such as `type C = f64`,
/// which would give the export a name the host cannot read).
#[doc(hidden)]
pub const fn sql_type_named<T: SqlType>(name: &str) -> bool {
    let (a, b) = (name.as_bytes(), T::NAME.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The body of an `sbx_sql__*` export: runs `f` on each row of the batch at `ptr..ptr + len`
/// whose arguments are all valid, and returns `out_ptr << 32 | out_len` of the result column.
///
/// # Safety
/// `ptr` must point at `len` readable bytes (the host's buffer from `sbx_prepare`).
#[doc(hidden)]
pub unsafe fn sql_invoke<R: SqlType>(
    ptr: *const u8,
    len: usize,
    name: &str,
    types: &[u8],
    f: impl Fn(&[u64]) -> R,
) -> u64 {
    crate::abi::install_panic_hook();
    // SAFETY: per the contract above.
    let input = if ptr.is_null() || len == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(ptr, len) } };
    crate::abi::output(run(input, name, types, f))
}

/// Input: `u32 rows, u32 cols`, then per column `u8 type`, `rows` validity bytes, `rows * 8` value
/// bytes. Output: `u8 type`, `rows` validity bytes, `rows * 8` value bytes (0 where null).
fn run<R: SqlType>(input: &[u8], name: &str, types: &[u8], f: impl Fn(&[u64]) -> R) -> Vec<u8> {
    let signature = || {
        let args: Vec<&str> = types.iter().map(|&t| type_name(t)).collect();
        format!("SQL function {name}({}) -> {}", args.join(", "), R::NAME)
    };
    let word = |at: usize| input.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let (Some(rows), Some(cols)) = (word(0), word(4)) else {
        panic!("{}: an input of {} bytes has no header", signature(), input.len())
    };
    assert!(cols == types.len(), "{}: called with {cols} arguments", signature());
    let expected = 8 + cols as u64 * (1 + 9 * rows as u64);
    assert!(input.len() as u64 == expected, "{}: input of {} bytes, expected {expected}", signature(), input.len());
    // Each column: (validity, values); every offset is within the input, so within usize.
    let column = 1 + 9 * rows;
    let columns: Vec<(&[u8], &[u8])> = (0..cols)
        .map(|i| {
            let bytes = &input[8 + i * column..][..column];
            if bytes[0] != types[i] {
                panic!("{}: argument {} is {}", signature(), i + 1, type_name(bytes[0]));
            }
            bytes[1..].split_at(rows)
        })
        .collect();
    let out_len = rows.checked_mul(9).and_then(|n| n.checked_add(1)).expect("too many rows");
    let mut out = vec![0u8; out_len];
    out[0] = R::CODE;
    let (valid, values) = out[1..].split_at_mut(rows);
    let mut args = vec![0u64; cols];
    for row in 0..rows {
        if columns.iter().all(|(valid, _)| valid[row] != 0) {
            for (arg, (_, column)) in args.iter_mut().zip(&columns) {
                let b = &column[8 * row..8 * row + 8];
                *arg = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            }
            valid[row] = 1;
            values[8 * row..8 * row + 8].copy_from_slice(&f(&args).to_bits().to_le_bytes());
        }
    }
    out
}

fn type_name(code: u8) -> &'static str {
    match code {
        0 => "f64",
        1 => "i64",
        2 => "bool",
        _ => "an unknown type",
    }
}

/// Makes a plain Rust fn callable from SQL: `sql_function!(name(arg types) -> return type)`, with
/// types `f64`, `i64` and `bool`. A query then calls `name(...)` on columns; a row with a null
/// argument gives null without calling the fn. It works at the crate root and inside a fn body
/// (a cell), and exports `sbx_sql__<name>__<arg types joined by _>__<return type>`.
///
/// ```ignore
/// fn kelvin(c: f64) -> f64 { c + 273.15 }
/// sql_function!(kelvin(f64) -> f64); // exports sbx_sql__kelvin__f64__f64
/// fn warm(t: f64, limit: f64) -> bool { t > limit }
/// sql_function!(warm(f64, f64) -> bool); // exports sbx_sql__warm__f64_f64__bool
/// ```
#[macro_export]
macro_rules! sql_function {
    (@export $export:expr, $name:ident($($arg:ident),*) -> $ret:ident) => {
        const _: () = {
            $(::core::assert!(
                $crate::sql_type_named::<$arg>(::core::stringify!($arg)),
                "sql_function!: write the argument types as f64, i64 or bool"
            );)*
            ::core::assert!(
                $crate::sql_type_named::<$ret>(::core::stringify!($ret)),
                "sql_function!: write the return type as f64, i64 or bool"
            );
            /// # Safety
            /// Called by the host only, with a buffer from `sbx_prepare`.
            #[unsafe(export_name = $export)]
            #[allow(unused_mut, unused_variables)]
            unsafe extern "C" fn export(ptr: *const u8, len: usize) -> u64 {
                // SAFETY: forwarded contract.
                unsafe {
                    $crate::sql_invoke::<$ret>(
                        ptr,
                        len,
                        ::core::stringify!($name),
                        &[$(<$arg as $crate::SqlType>::CODE),*],
                        |args: &[u64]| {
                            let mut args = args.iter();
                            $name($(<$arg as $crate::SqlType>::from_bits(*args.next().unwrap())),*)
                        },
                    )
                }
            }
        };
    };
    ($name:ident() -> $ret:ident) => {
        $crate::sql_function!(
            @export ::core::concat!("sbx_sql__", ::core::stringify!($name), "____", ::core::stringify!($ret)),
            $name() -> $ret
        );
    };
    ($name:ident($first:ident $(, $rest:ident)* $(,)?) -> $ret:ident) => {
        $crate::sql_function!(
            @export ::core::concat!(
                "sbx_sql__", ::core::stringify!($name),
                "__", ::core::stringify!($first), $("_", ::core::stringify!($rest),)*
                "__", ::core::stringify!($ret)
            ),
            $name($first $(, $rest)*) -> $ret
        );
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kelvin(c: f64) -> f64 {
        c + 273.15
    }
    crate::sql_function!(kelvin(f64) -> f64);

    fn pi() -> f64 {
        std::f64::consts::PI
    }
    crate::sql_function!(pi() -> f64);

    unsafe extern "C" {
        #[link_name = "sbx_sql__kelvin__f64__f64"]
        fn kelvin_export(ptr: *const u8, len: usize) -> u64;
        #[link_name = "sbx_sql__pi____f64"]
        fn pi_export(ptr: *const u8, len: usize) -> u64;
        #[link_name = "sbx_sql__warm__f64_f64__bool"]
        fn warm_export(ptr: *const u8, len: usize) -> u64;
        #[link_name = "sbx_sql__pick__bool_i64_i64__i64"]
        fn pick_export(ptr: *const u8, len: usize) -> u64;
    }

    /// A column: its type and its rows (None = null).
    type Column<'a> = (u8, &'a [Option<u64>]);

    fn encode(rows: usize, columns: &[Column]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(rows as u32).to_le_bytes());
        out.extend_from_slice(&(columns.len() as u32).to_le_bytes());
        for (code, values) in columns {
            assert_eq!(values.len(), rows);
            out.push(*code);
            out.extend(values.iter().map(|v| u8::from(v.is_some())));
            // A null's bytes are whatever the host had there.
            values.iter().for_each(|v| out.extend_from_slice(&v.unwrap_or(0xdead_beef).to_le_bytes()));
        }
        out
    }

    /// Calls an export as the host does: `sbx_prepare`, write, call; returns (type, rows).
    fn call(export: unsafe extern "C" fn(*const u8, usize) -> u64, input: &[u8]) -> (u8, Vec<Option<u64>>) {
        let ptr = crate::abi::prepare(input.len());
        // SAFETY: `prepare` gave at least `input.len()` writable bytes.
        let packed = unsafe {
            std::ptr::copy_nonoverlapping(input.as_ptr(), ptr, input.len());
            export(ptr, input.len())
        };
        let out = crate::abi::last_output();
        assert_eq!((packed & 0xffff_ffff) as usize, out.len());
        let rows = (out.len() - 1) / 9;
        assert_eq!(out.len(), 1 + 9 * rows);
        let values = (0..rows)
            .map(|i| {
                let bits = u64::from_le_bytes(out[1 + rows + 8 * i..][..8].try_into().unwrap());
                match out[1 + i] {
                    1 => Some(bits),
                    0 => {
                        assert_eq!(bits, 0);
                        None
                    }
                    v => panic!("validity byte {v}"),
                }
            })
            .collect();
        (out[0], values)
    }

    fn f(v: f64) -> Option<u64> {
        Some(v.to_bits())
    }

    #[test]
    fn one_f64_argument_with_nulls() {
        let input = encode(3, &[(0, &[f(0.0), None, f(-273.15)])]);
        let (code, out) = call(kelvin_export, &input);
        assert_eq!((code, out), (0, vec![f(273.15), None, f(0.0)]));
    }

    #[test]
    fn no_arguments_and_no_rows() {
        let (code, out) = call(pi_export, &encode(2, &[]));
        assert_eq!((code, out), (0, vec![f(std::f64::consts::PI); 2]));
        assert_eq!(call(kelvin_export, &encode(0, &[(0, &[])])), (0, vec![]));
    }

    #[test]
    fn inside_a_fn_body_two_and_three_arguments_bool_and_i64() {
        fn warm(t: f64, limit: f64) -> bool {
            t > limit
        }
        crate::sql_function!(warm(f64, f64) -> bool);
        fn pick(first: bool, a: i64, b: i64) -> i64 {
            if first { a } else { b }
        }
        crate::sql_function!(pick(bool, i64, i64) -> i64);

        let input = encode(3, &[(0, &[f(20.0), f(5.0), None]), (0, &[f(10.0), f(10.0), f(0.0)])]);
        assert_eq!(call(warm_export, &input), (2, vec![Some(1), Some(0), None]));

        let neg = |v: i64| Some(v as u64);
        let input = encode(
            4,
            &[(2, &[Some(1), Some(0), None, Some(1)]), (1, &[neg(-7); 4]), (1, &[neg(8), neg(9), neg(10), None])],
        );
        assert_eq!(call(pick_export, &input), (1, vec![neg(-7), neg(9), None, None]));
    }

    fn kelvin_bits(args: &[u64]) -> f64 {
        kelvin(f64::from_bits(args[0]))
    }

    #[test]
    #[should_panic(expected = "SQL function kelvin(f64) -> f64: argument 1 is i64")]
    fn mismatched_types_panic() {
        // The export itself aborts on a panic (it is `extern "C"`); its body unwinds.
        run(&encode(1, &[(1, &[Some(3)])]), "kelvin", &[0], kelvin_bits);
    }

    #[test]
    #[should_panic(expected = "SQL function kelvin(f64) -> f64: called with 2 arguments")]
    fn mismatched_arity_panics() {
        run(&encode(1, &[(0, &[f(1.0)]), (0, &[f(2.0)])]), "kelvin", &[0], kelvin_bits);
    }

    #[test]
    #[should_panic(expected = "input of 12 bytes, expected 18")]
    fn short_input_panics() {
        run(&encode(1, &[(0, &[f(1.0)])])[..12], "kelvin", &[0], kelvin_bits);
    }

    #[test]
    fn type_names() {
        assert!(sql_type_named::<f64>("f64") && sql_type_named::<bool>("bool"));
        assert!(!sql_type_named::<i64>("I64") && !sql_type_named::<i64>("i6"));
    }
}
