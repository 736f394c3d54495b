"""The architecture program, shared by every stage: how its text is parsed and hashed
(`source`), the `Net` contract (`contract`), what it may import and touch (`policy`) and the
static checks that enforce it (`static`), and LEMUR's conventions (`lemur`).
"""
