//! The entity catalogue: which entity names QBO knows (case-insensitively, canonical
//! PascalCase), which are name lists with an `Active` flag (default `Active = true` filter),
//! their default row order when a query has no `ORDERBY`, which CDC refuses, and the
//! properties each has (for `Property X not found for Entity Y`).
//!
//! Facts from `docs/qbo-behaviour.md` §6, §10, §11 and §12 (default orders observed in the
//! recordings in `crates/qbo-sandbox/tests/fixtures/qbo-recorded`: Customer by
//! `FullyQualifiedName`, Vendor/Employee by `DisplayName`, both case-sensitive; transactions
//! (SalesReceipt) newest `LastUpdatedTime` first).

/// Every entity `/query` knows (`docs/qbo-behaviour.md` §11), canonical spelling.
pub const QUERYABLE: &[&str] = &[
    "Account",
    "Attachable",
    "Bill",
    "BillPayment",
    "Budget",
    "Class",
    "CompanyCurrency",
    "CompanyInfo",
    "CreditCardPayment",
    "CreditMemo",
    "Customer",
    "CustomerType",
    "Department",
    "Deposit",
    "Employee",
    "Estimate",
    "ExchangeRate",
    "InventoryAdjustment",
    "Invoice",
    "Item",
    "JournalCode",
    "JournalEntry",
    "Payment",
    "PaymentMethod",
    "Preferences",
    "Purchase",
    "PurchaseOrder",
    "RecurringTransaction",
    "RefundReceipt",
    "SalesReceipt",
    "TaxAgency",
    "TaxClassification",
    "TaxCode",
    "TaxRate",
    "Term",
    "TimeActivity",
    "Transfer",
    "Vendor",
    "VendorCredit",
];

/// Entities with an `Active` field (`docs/qbo-behaviour.md` §6).
const NAME_LISTS: &[&str] = &[
    "Account",
    "Budget",
    "Class",
    "CompanyCurrency",
    "Customer",
    "CustomerType",
    "Department",
    "Employee",
    "FixedAsset",
    "InventorySite",
    "Item",
    "JournalCode",
    "MasterAccount",
    "OtherName",
    "PaymentMethod",
    "PriceLevel",
    "SalesRep",
    "Task",
    "TaxAgency",
    "TaxCode",
    "TaxRate",
    "Term",
    "UserAlert",
    "Vendor",
    "VendorType",
];

/// Entities CDC does not support (`docs/qbo-behaviour.md` §10).
pub const CDC_UNSUPPORTED: &[&str] = &[
    "JournalCode",
    "TaxAgency",
    "TimeActivity",
    "TaxCode",
    "TaxRate",
];

/// Properties every entity has.
const COMMON_PROPERTIES: &[&str] = &[
    "Id",
    "SyncToken",
    "MetaData",
    "domain",
    "sparse",
    "status",
    "CustomField",
    "AttachableRef",
];

const CUSTOMER_PROPERTIES: &[&str] = &[
    "Taxable",
    "BillAddr",
    "ShipAddr",
    "Notes",
    "Job",
    "BillWithParent",
    "ParentRef",
    "Level",
    "Balance",
    "BalanceWithJobs",
    "OpenBalanceDate",
    "CurrencyRef",
    "PreferredDeliveryMethod",
    "PaymentMethodRef",
    "SalesTermRef",
    "DefaultTaxCodeRef",
    "CustomerTypeRef",
    "ResaleNum",
    "Title",
    "GivenName",
    "MiddleName",
    "FamilyName",
    "Suffix",
    "FullyQualifiedName",
    "CompanyName",
    "DisplayName",
    "PrintOnCheckName",
    "Active",
    "PrimaryPhone",
    "AlternatePhone",
    "Mobile",
    "Fax",
    "PrimaryEmailAddr",
    "WebAddr",
    "TaxExemptionReasonId",
    "IsProject",
    "ClientEntityId",
    "V4IDPseudonym",
    "ARAccountRef",
    "SecondaryTaxIdentifier",
];

const VENDOR_PROPERTIES: &[&str] = &[
    "BillAddr",
    "Balance",
    "AcctNum",
    "Vendor1099",
    "CurrencyRef",
    "TermRef",
    "GivenName",
    "MiddleName",
    "FamilyName",
    "Suffix",
    "Title",
    "CompanyName",
    "DisplayName",
    "PrintOnCheckName",
    "Active",
    "PrimaryPhone",
    "AlternatePhone",
    "Mobile",
    "Fax",
    "PrimaryEmailAddr",
    "WebAddr",
    "TaxIdentifier",
    "OtherContactInfo",
    "APAccountRef",
    "CostRate",
    "BillRate",
];

const EMPLOYEE_PROPERTIES: &[&str] = &[
    "BillableTime",
    "GivenName",
    "MiddleName",
    "FamilyName",
    "Suffix",
    "Title",
    "DisplayName",
    "PrintOnCheckName",
    "Active",
    "PrimaryPhone",
    "Mobile",
    "PrimaryEmailAddr",
    "EmployeeNumber",
    "SSN",
    "PrimaryAddr",
    "BillRate",
    "CostRate",
    "BirthDate",
    "Gender",
    "HiredDate",
    "ReleasedDate",
    "Organization",
    "V4IDPseudonym",
];

const ITEM_PROPERTIES: &[&str] = &[
    "Name",
    "Sku",
    "Description",
    "Active",
    "SubItem",
    "ParentRef",
    "Level",
    "FullyQualifiedName",
    "Taxable",
    "SalesTaxIncluded",
    "UnitPrice",
    "Type",
    "IncomeAccountRef",
    "PurchaseDesc",
    "PurchaseTaxIncluded",
    "PurchaseCost",
    "ExpenseAccountRef",
    "AssetAccountRef",
    "TrackQtyOnHand",
    "QtyOnHand",
    "InvStartDate",
    "SalesTaxCodeRef",
    "PurchaseTaxCodeRef",
    "ClassRef",
    "Source",
    "AbatementRate",
    "ReverseChargeRate",
    "ItemCategoryType",
];

const ACCOUNT_PROPERTIES: &[&str] = &[
    "Name",
    "SubAccount",
    "ParentRef",
    "Description",
    "FullyQualifiedName",
    "Active",
    "Classification",
    "AccountType",
    "AccountSubType",
    "AcctNum",
    "CurrentBalance",
    "CurrentBalanceWithSubAccounts",
    "CurrencyRef",
    "TaxCodeRef",
];

/// Transaction properties (Invoice, SalesReceipt, Estimate and friends).
const TXN_PROPERTIES: &[&str] = &[
    "DocNumber",
    "TxnDate",
    "DueDate",
    "ShipDate",
    "CurrencyRef",
    "ExchangeRate",
    "PrivateNote",
    "TxnStatus",
    "LinkedTxn",
    "Line",
    "TxnTaxDetail",
    "CustomerRef",
    "VendorRef",
    "CustomerMemo",
    "BillAddr",
    "ShipAddr",
    "ShipFromAddr",
    "FreeFormAddress",
    "ClassRef",
    "DepartmentRef",
    "SalesTermRef",
    "TotalAmt",
    "HomeTotalAmt",
    "ApplyTaxAfterDiscount",
    "PrintStatus",
    "EmailStatus",
    "BillEmail",
    "BillEmailCc",
    "BillEmailBcc",
    "DeliveryInfo",
    "Balance",
    "HomeBalance",
    "Deposit",
    "DepositToAccountRef",
    "PaymentMethodRef",
    "PaymentRefNum",
    "AllowIPNPayment",
    "AllowOnlinePayment",
    "AllowOnlineCreditCardPayment",
    "AllowOnlineACHPayment",
    "InvoiceLink",
    "GlobalTaxCalculation",
    "TransactionLocationType",
    "TrackingNum",
    "ShipMethodRef",
    "RecurDataRef",
    "TaxExemptionRef",
    "AcceptedBy",
    "AcceptedDate",
    "ExpirationDate",
    "APAccountRef",
    "ARAccountRef",
    "AccountRef",
    "TotalTax",
    "PaymentType",
    "UnappliedAmt",
    "ProcessPayment",
    "EInvoiceStatus",
];

/// How rows are ordered when a query has no `ORDERBY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultOrder {
    /// By this property, case-sensitively, then by numeric Id.
    Field(&'static str),
    /// Newest `LastUpdatedTime` first (transactions).
    LastUpdatedDesc,
}

/// One entity kind as the sandbox knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityKind {
    /// Canonical PascalCase name (the response key).
    pub name: String,
    /// Has `Active`; queries default to `Active = true`.
    pub name_list: bool,
    /// Records have no `Id` (ExchangeRate): the store keys them by position.
    pub keyless: bool,
}

impl EntityKind {
    /// The kind for a canonical name (known or loaded from a data file).
    pub fn new(name: &str) -> EntityKind {
        EntityKind {
            name: name.to_owned(),
            name_list: NAME_LISTS.contains(&name),
            keyless: qbo_entities::by_qbo_name(name)
                .is_some_and(|e| matches!(e.key, qbo_entities::KeyShape::Composite(_))),
        }
    }

    pub fn default_order(&self) -> DefaultOrder {
        match self.name.as_str() {
            "Customer" | "Item" | "Account" | "Class" | "Department" => {
                DefaultOrder::Field("FullyQualifiedName")
            }
            "Vendor" | "Employee" | "TaxAgency" => DefaultOrder::Field("DisplayName"),
            _ if self.name_list => DefaultOrder::Field("Name"),
            _ => DefaultOrder::LastUpdatedDesc,
        }
    }

    pub fn cdc_supported(&self) -> bool {
        !CDC_UNSUPPORTED.contains(&self.name.as_str())
    }

    /// Properties known for this kind regardless of the data (case as QBO spells them).
    pub fn known_properties(&self) -> Vec<&'static str> {
        let specific: &[&str] = match self.name.as_str() {
            "Customer" => CUSTOMER_PROPERTIES,
            "Vendor" => VENDOR_PROPERTIES,
            "Employee" => EMPLOYEE_PROPERTIES,
            "Item" => ITEM_PROPERTIES,
            "Account" => ACCOUNT_PROPERTIES,
            "Invoice" | "SalesReceipt" | "Estimate" | "CreditMemo" | "RefundReceipt" | "Bill"
            | "Purchase" | "PurchaseOrder" | "VendorCredit" | "Payment" | "Deposit"
            | "JournalEntry" | "BillPayment" | "Transfer" => TXN_PROPERTIES,
            _ => &[],
        };
        let mut all: Vec<&'static str> = COMMON_PROPERTIES.to_vec();
        all.extend_from_slice(specific);
        if self.name_list && !all.contains(&"Active") {
            all.extend_from_slice(&["Active", "Name", "DisplayName", "FullyQualifiedName"]);
        }
        all
    }
}

/// The key QBO answers `canonical`'s records under (`CreditCardPaymentTxn` for
/// CreditCardPayment, per the API reference; otherwise the name itself).
pub fn response_key(canonical: &str) -> &str {
    qbo_entities::by_qbo_name(canonical)
        .filter(|e| e.qbo_name == canonical)
        .map_or(canonical, |e| e.response_key)
}

/// Whether `canonical` is one record per company, read at `/{entity}/{realm}` or `/{entity}`.
pub fn is_singleton(canonical: &str) -> bool {
    qbo_entities::by_qbo_name(canonical)
        .is_some_and(|e| e.qbo_name == canonical && e.kind == qbo_entities::Kind::Singleton)
}

/// The canonical spelling of a known entity name, ignoring ASCII case.
pub fn canonical_known(name: &str) -> Option<&'static str> {
    QUERYABLE
        .iter()
        .chain(NAME_LISTS.iter())
        .find(|known| known.eq_ignore_ascii_case(name))
        .copied()
        .or_else(|| {
            qbo_entities::ENTITIES
                .iter()
                .find(|e| e.qbo_name.eq_ignore_ascii_case(name))
                .map(|e| e.qbo_name)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_case_insensitively() {
        assert_eq!(canonical_known("customer"), Some("Customer"));
        assert_eq!(canonical_known("SALESRECEIPT"), Some("SalesReceipt"));
        assert_eq!(canonical_known("billPayment"), Some("BillPayment"));
        assert_eq!(canonical_known("Custmoer"), None);
    }

    #[test]
    fn name_lists_and_orders() {
        assert!(EntityKind::new("Customer").name_list);
        assert!(EntityKind::new("Item").name_list);
        assert!(!EntityKind::new("Invoice").name_list);
        assert_eq!(
            EntityKind::new("Customer").default_order(),
            DefaultOrder::Field("FullyQualifiedName")
        );
        assert_eq!(
            EntityKind::new("Vendor").default_order(),
            DefaultOrder::Field("DisplayName")
        );
        assert_eq!(
            EntityKind::new("Invoice").default_order(),
            DefaultOrder::LastUpdatedDesc
        );
        assert_eq!(
            EntityKind::new("Term").default_order(),
            DefaultOrder::Field("Name")
        );
    }

    #[test]
    fn cdc_refuses_the_documented_entities() {
        for name in [
            "JournalCode",
            "TaxAgency",
            "TimeActivity",
            "TaxCode",
            "TaxRate",
        ] {
            assert!(!EntityKind::new(name).cdc_supported(), "{name}");
        }
        assert!(EntityKind::new("Invoice").cdc_supported());
    }

    #[test]
    fn invoices_have_no_active_property() {
        let props = EntityKind::new("Invoice").known_properties();
        assert!(props.contains(&"TxnDate"));
        assert!(props.contains(&"MetaData"));
        assert!(!props.contains(&"Active"));
        assert!(
            EntityKind::new("Customer")
                .known_properties()
                .contains(&"Active")
        );
    }
}
