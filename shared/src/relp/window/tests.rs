use super::*;

#[test]
fn txnrs_start_at_one_and_wrap_after_the_largest() {
    let mut t = Txnr::new();
    assert_eq!((t.take(), t.take()), (1, 2));
    let mut t = Txnr(MAX_TXNR - 1);
    assert_eq!((t.take(), t.take(), t.take()), (MAX_TXNR - 1, MAX_TXNR, 1));
}

#[test]
fn in_order_answers_advance_the_answered_count() {
    let mut w = Window::new(3);
    assert_eq!(w.room(), 3);
    assert_eq!((w.sent(2), w.sent(3), w.sent(4)), (1, 2, 3));
    assert_eq!(w.room(), 0);
    assert_eq!(w.answered(2), Ok(1));
    assert_eq!(w.answered(3), Ok(2));
    assert_eq!((w.in_use(), w.room()), (1, 2));
    assert_eq!(w.answered(4), Ok(3));
    assert!(w.is_empty());
}

#[test]
fn an_answer_out_of_order_counts_once_the_gap_is_answered() {
    let mut w = Window::new(8);
    for txnr in 2..=5 {
        w.sent(txnr);
    }
    assert_eq!(w.answered(4), Ok(0));
    assert_eq!(w.answered(3), Ok(0));
    assert_eq!(
        w.in_use(),
        4,
        "answered ones behind a gap still hold their slot"
    );
    assert_eq!(w.answered(2), Ok(3));
    assert_eq!(w.answered(5), Ok(4));
}

#[test]
fn unknown_and_repeated_answers_are_errors() {
    let mut w = Window::new(4);
    assert_eq!(w.answered(2), Err(WindowError::Unknown(2)), "nothing waits");
    w.sent(2);
    w.sent(3);
    assert_eq!(w.answered(7), Err(WindowError::Unknown(7)));
    assert_eq!(w.answered(1), Err(WindowError::Unknown(1)));
    assert_eq!(w.answered(0), Err(WindowError::Unknown(0)));
    assert_eq!(w.answered(3), Ok(0));
    assert_eq!(w.answered(3), Err(WindowError::Duplicate(3)));
    assert_eq!(w.answered(2), Ok(2));
    assert_eq!(w.answered(2), Err(WindowError::Unknown(2)), "already gone");
}

#[test]
fn answers_across_the_txnr_wrap_are_found() {
    let mut w = Window::new(4);
    let mut t = Txnr(MAX_TXNR - 1);
    let sent: Vec<u32> = (0..4).map(|_| t.take()).collect();
    for txnr in &sent {
        w.sent(*txnr);
    }
    assert_eq!(sent, [MAX_TXNR - 1, MAX_TXNR, 1, 2]);
    assert_eq!(w.answered(2), Ok(0));
    assert_eq!(w.answered(1), Ok(0));
    assert_eq!(w.answered(MAX_TXNR - 1), Ok(1));
    assert_eq!(w.answered(MAX_TXNR), Ok(4));
}

#[test]
fn a_zero_capacity_is_one() {
    assert_eq!(Window::new(0).room(), 1);
}
