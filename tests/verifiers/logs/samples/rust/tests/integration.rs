#[test]
fn it_adds() { assert_eq!(sample::add(2, 2), 4); }

#[test]
fn it_subs() { assert_eq!(sample::sub(2, 2), 0); }
