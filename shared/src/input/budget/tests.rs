use super::*;

const QUICK: Duration = Duration::from_millis(50);

#[tokio::test]
async fn lease_within_cap_is_granted_at_once_and_returned_on_drop() {
    let budget = ReadBudget::new(1000);
    let mut a = BudgetLease::new(budget.clone());
    assert_eq!(a.grow_to(600).await, Ok(()));
    let mut b = BudgetLease::new(budget.clone());
    assert_eq!(b.grow_to(400).await, Ok(()));
    assert_eq!(budget.in_use(), 1000);
    drop(a);
    assert_eq!(budget.in_use(), 400);
    b.shrink_to(100);
    assert_eq!(budget.in_use(), 100);
    drop(b);
    assert_eq!(budget.in_use(), 0);
    assert!(
        budget.holders().live.is_empty(),
        "no holder left registered"
    );
}

#[tokio::test]
async fn the_cap_is_never_passed() {
    let budget = ReadBudget::with_grace(100, Duration::from_secs(60));
    let mut a = BudgetLease::new(budget.clone());
    a.grow_to(80).await.unwrap();
    let mut b = BudgetLease::new(budget.clone());
    let waiting = tokio::time::timeout(QUICK, b.grow_to(50)).await;
    assert!(waiting.is_err(), "no overdraft: the request waits");
    assert_eq!(budget.in_use(), 80);
    a.shrink_to(40);
    assert_eq!(b.grow_to(50).await, Ok(()));
    assert_eq!(budget.in_use(), 90);
}

#[tokio::test]
async fn a_waiting_request_is_served_when_memory_comes_back_within_the_grace() {
    let budget = ReadBudget::with_grace(100, Duration::from_secs(60));
    let mut a = BudgetLease::new(budget.clone());
    a.grow_to(100).await.unwrap();
    let waiter = {
        let budget = budget.clone();
        tokio::spawn(async move {
            let mut b = BudgetLease::new(budget);
            b.grow_to(30).await.map(|()| b.held())
        })
    };
    tokio::time::sleep(QUICK).await;
    assert!(!waiter.is_finished());
    a.shrink_to(50);
    let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
    assert!(matches!(got, Ok(Ok(Ok(30)))));
    assert!(!a.is_shed(), "nobody was shed: memory came back in time");
}

#[tokio::test]
async fn after_the_grace_the_largest_holder_is_shed_for_a_smaller_one() {
    let budget = ReadBudget::with_grace(100, QUICK);
    let mut big = BudgetLease::new(budget.clone());
    big.grow_to(70).await.unwrap();
    let mut small = BudgetLease::new(budget.clone());
    small.grow_to(30).await.unwrap();
    let mut newcomer = BudgetLease::new(budget.clone());
    let request = tokio::spawn(async move { newcomer.grow_to(20).await.map(|()| newcomer) });
    // The largest holder learns it was shed, and its connection gives its memory back.
    let shed = tokio::time::timeout(Duration::from_secs(5), big.shed()).await;
    assert!(shed.is_ok(), "the largest holder is shed");
    assert!(big.is_shed());
    assert!(!small.is_shed(), "only the worst holder is shed");
    drop(big);
    let newcomer = tokio::time::timeout(Duration::from_secs(5), request).await;
    let newcomer = newcomer.unwrap().unwrap().unwrap();
    assert_eq!(newcomer.held(), 20);
    assert_eq!(budget.in_use(), 50);
}

#[tokio::test]
async fn on_equal_holdings_the_oldest_is_shed() {
    let budget = ReadBudget::with_grace(100, QUICK);
    let mut old = BudgetLease::new(budget.clone());
    old.grow_to(50).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut young = BudgetLease::new(budget.clone());
    young.grow_to(50).await.unwrap();
    let mut newcomer = BudgetLease::new(budget.clone());
    let request = tokio::spawn(async move { newcomer.grow_to(10).await });
    let shed = tokio::time::timeout(Duration::from_secs(5), old.shed()).await;
    assert!(shed.is_ok());
    assert!(!young.is_shed());
    drop(old);
    let granted = tokio::time::timeout(Duration::from_secs(5), request).await;
    assert!(matches!(granted, Ok(Ok(Ok(())))));
}

#[tokio::test]
async fn the_worst_holder_waits_and_sheds_nobody() {
    let budget = ReadBudget::with_grace(100, QUICK);
    let mut small = BudgetLease::new(budget.clone());
    small.grow_to(30).await.unwrap();
    let mut big = BudgetLease::new(budget.clone());
    big.grow_to(70).await.unwrap();
    let more = tokio::time::timeout(Duration::from_millis(300), big.grow_to(90)).await;
    assert!(more.is_err(), "the worst holder keeps waiting");
    assert!(
        !small.is_shed(),
        "a larger holder never sheds a smaller one"
    );
    assert!(!big.is_shed());
}

#[tokio::test]
async fn a_shed_lease_that_waits_fails_its_request() {
    let budget = ReadBudget::with_grace(100, QUICK);
    let mut big = BudgetLease::new(budget.clone());
    big.grow_to(80).await.unwrap();
    let big_request = tokio::spawn(async move { big.grow_to(100).await });
    let mut small = BudgetLease::new(budget.clone());
    small.grow_to(20).await.unwrap();
    let small_request = tokio::spawn(async move { small.grow_to(40).await });
    let big_result = tokio::time::timeout(Duration::from_secs(5), big_request).await;
    assert!(matches!(big_result, Ok(Ok(Err(Shed)))));
    let small_result = tokio::time::timeout(Duration::from_secs(5), small_request).await;
    assert!(matches!(small_result, Ok(Ok(Ok(())))));
}

#[tokio::test]
async fn optional_growth_never_waits_nor_passes_the_cap() {
    let budget = ReadBudget::new(100);
    let mut a = BudgetLease::new(budget.clone());
    assert!(a.try_grow_to(90));
    let mut b = BudgetLease::new(budget.clone());
    assert!(!b.try_grow_to(20));
    assert!(b.try_grow_to(10));
    assert_eq!(budget.in_use(), 100);
}
