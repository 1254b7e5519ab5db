"""dogbreed.aws"""
