import Resources
print("x")
