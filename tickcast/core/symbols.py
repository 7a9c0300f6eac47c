"""What a symbol may look like, everywhere: on the wire, in Delta, in URLs."""

# Letters, digits and the punctuation tickers use (BRK.B, BF-B, ^GSPC, ES=F, EUR_USD, X:BTCUSD).
# No "/": a symbol must fit in one URL path segment.
SYMBOL_PATTERN = r"^[A-Za-z0-9.\-^=_:]{1,32}$"
