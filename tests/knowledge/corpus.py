"""Tiny labelled documents and queries for the knowledge tests."""

from __future__ import annotations

from knowledge import DocumentInput

MEDICINE = [
    "Insulin therapy lowers blood glucose in patients with type 1 diabetes. Dosage depends "
    "on carbohydrate intake and the patient's insulin sensitivity.",
    "Hypertension raises the risk of stroke and heart failure; doctors prescribe ACE "
    "inhibitors and advise patients to reduce salt.",
    "Antibiotics such as amoxicillin treat bacterial infections but have no effect on viral "
    "infections like influenza.",
]
FINANCE = [
    "A bond's yield moves inversely to its price; when central banks raise interest rates, "
    "existing bond prices fall.",
    "Diversifying a stock portfolio across sectors reduces risk; index funds track the "
    "market at low fees.",
    "Inflation erodes the purchasing power of savings, so investors look for assets whose "
    "returns beat the consumer price index.",
]
SPORTS = [
    "The striker scored twice in the second half, and the goalkeeper saved a penalty to win "
    "the football match.",
    "Marathon runners train with long slow runs and interval sessions to build endurance "
    "before race day.",
    "In tennis, a player must win six games to take a set, and a tie-break decides the set "
    "at six games all.",
]
LABELLED_QUERIES = [
    ("What dose of insulin should a diabetic patient take?", "medicine"),
    ("Which drugs treat high blood pressure?", "medicine"),
    ("Is amoxicillin useful against the flu?", "medicine"),
    ("What are the symptoms of a heart attack?", "medicine"),
    ("How should a doctor treat a bacterial infection?", "medicine"),
    ("Why do bond prices fall when rates go up?", "finance"),
    ("Should I buy an index fund or single stocks?", "finance"),
    ("How does inflation affect my savings account?", "finance"),
    ("What is a good dividend yield for shares?", "finance"),
    ("How do central banks set interest rates?", "finance"),
    ("Who scored the winning goal in the football match?", "sports"),
    ("How many kilometres a week to train for a marathon?", "sports"),
    ("How does a tie-break work in tennis?", "sports"),
    ("Which team won the basketball championship?", "sports"),
    ("How do goalkeepers prepare to save penalties?", "sports"),
]


def documents(contributor: str = "alice") -> list[DocumentInput]:
    docs = []
    for domain, texts in (("medicine", MEDICINE), ("finance", FINANCE), ("sports", SPORTS)):
        for i, text in enumerate(texts):
            docs.append(DocumentInput(content=text, contributor=contributor,
                                      title=f"{domain}-{i}", domains=[domain]))
    return docs
