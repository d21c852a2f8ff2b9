import FuzzSupport

FuzzSupport.main(.sectionconfig)
