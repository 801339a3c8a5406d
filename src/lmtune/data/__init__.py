"""Task data: read rows in common shapes, encode them with the model's tokenizer, batch them."""
