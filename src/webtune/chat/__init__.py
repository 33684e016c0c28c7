"""What every stage shares about chat data: tokenizer loading, chat templates, the loss mask, prompt
ids (`tokenize`), and the OpenAI cookbook checks of a chat example (`cookbook`)."""
