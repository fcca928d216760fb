/// Comparisons whose time does not depend on where the inputs differ, for secrets, tokens and signatures.
enum ConstantTime {
    /// True when `a` and `b` are equal; always looks at every byte of the longer one.
    static func equal(_ a: some Collection<UInt8>, _ b: some Collection<UInt8>) -> Bool {
        let left = Array(a)
        let right = Array(b)
        var difference = UInt8(left.count == right.count ? 0 : 1)
        for index in 0..<max(left.count, right.count) {
            difference |= (index < left.count ? left[index] : 0) ^ (index < right.count ? right[index] : 0)
        }
        return difference == 0
    }
}
